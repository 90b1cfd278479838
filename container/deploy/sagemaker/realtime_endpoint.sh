#!/usr/bin/env bash
# A SageMaker real-time endpoint serving a model with the mlapp image, with the AWS CLI.
#
#   IMAGE=123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlapp:1a2b3c4d5e6f \
#   MODEL_DATA=s3://my-models/gender/model.tar.gz \
#   ROLE_ARN=arn:aws:iam::123456789012:role/SageMakerExecutionRole \
#   container/deploy/sagemaker/realtime_endpoint.sh gender-v1
#
# ROLE_ARN is the execution role SageMaker assumes: it needs s3:GetObject on MODEL_DATA, ECR
# pull (ecr:GetAuthorizationToken, ecr:BatchGetImage, ecr:GetDownloadUrlForLayer) and
# CloudWatch Logs (the managed AmazonSageMakerFullAccess policy covers all three).
# MODEL_DATA is a model.tar.gz with the model folder's files at its root (package_model.sh).
set -euo pipefail
name=${1:?usage: $0 NAME}
: "${IMAGE:?}" "${MODEL_DATA:?}" "${ROLE_ARN:?}"
instance=${INSTANCE_TYPE:-ml.c6i.large}

aws sagemaker create-model --model-name "$name" \
    --execution-role-arn "$ROLE_ARN" \
    --primary-container "Image=$IMAGE,ModelDataUrl=$MODEL_DATA,Environment={SAGEMAKER_MODEL_SERVER_TIMEOUT=60}"

aws sagemaker create-endpoint-config --endpoint-config-name "$name" \
    --production-variants "VariantName=main,ModelName=$name,InstanceType=$instance,InitialInstanceCount=${INSTANCE_COUNT:-2}"

aws sagemaker create-endpoint --endpoint-name "$name" --endpoint-config-name "$name"
aws sagemaker wait endpoint-in-service --endpoint-name "$name"

# One prediction: CSV in, JSON out.
payload=$(mktemp)
head -n 2 "$(dirname "$0")/../../../examples/gender/payloads/pipeline/rows.csv" >"$payload"
aws sagemaker-runtime invoke-endpoint --endpoint-name "$name" \
    --content-type text/csv --accept application/json \
    --body "fileb://$payload" /dev/stdout
