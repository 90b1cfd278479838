#!/usr/bin/env bash
# A SageMaker Batch Transform job with the mlapp image: every object under INPUT gives
# <object>.out under OUTPUT, one prediction line per input line.
#
#   MODEL_NAME=gender-v1 INPUT=s3://my-data/devices/2026-11/ OUTPUT=s3://my-data/scores/2026-11/ \
#   container/deploy/sagemaker/batch_transform.sh gender-2026-11
#
# MODEL_NAME is a model made by realtime_endpoint.sh's create-model (or the same command
# alone). mlapp answers GET /execution-parameters, so SageMaker sizes MaxConcurrentTransforms
# and MaxPayloadInMB itself unless they are given here. The role needs s3:GetObject on INPUT
# and s3:PutObject on OUTPUT.
set -euo pipefail
job=${1:?usage: $0 JOB_NAME}
: "${MODEL_NAME:?}" "${INPUT:?}" "${OUTPUT:?}"

aws sagemaker create-transform-job --transform-job-name "$job" \
    --model-name "$MODEL_NAME" \
    --batch-strategy MultiRecord \
    --transform-input "DataSource={S3DataSource={S3DataType=S3Prefix,S3Uri=$INPUT}},ContentType=text/csv,SplitType=Line" \
    --transform-output "S3OutputPath=$OUTPUT,Accept=text/csv,AssembleWith=Line" \
    --transform-resources "InstanceType=${INSTANCE_TYPE:-ml.c6i.xlarge},InstanceCount=${INSTANCE_COUNT:-1}" \
    --environment "SAGEMAKER_MODEL_SERVER_TIMEOUT=600"

aws sagemaker wait transform-job-completed-or-stopped --transform-job-name "$job"
aws sagemaker describe-transform-job --transform-job-name "$job" \
    --query '{status: TransformJobStatus, failure: FailureReason}'
