#!/usr/bin/env bash
# One mlapp replica on a VM, as the first user's production design runs it: the image from ECR,
# the model from S3 with the instance's IAM role, restarted by Docker, drained on stop.
#
#   IMAGE=123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlapp:1a2b3c4d5e6f \
#   MODEL_URI=s3://my-models/gender/model.tar.gz container/deploy/vm/run.sh
#
# Roll out a new model without a restart: upload it, then `docker kill --signal HUP mlapp`
# (or set MLAPP_MODEL_POLL_SECONDS). Put the VMs behind container/deploy/nginx/nginx.conf or a
# cloud load balancer with health check GET /ping (200), timeout 2 s.
set -euo pipefail
: "${IMAGE:?set IMAGE to the image to run}"
: "${MODEL_URI:?set MODEL_URI, e.g. s3://bucket/path/model.tar.gz}"
region=${AWS_REGION:-$(curl -fsS -m 2 http://169.254.169.254/latest/meta-data/placement/region 2>/dev/null || true)}
docker rm -f mlapp >/dev/null 2>&1 || true
# --stop-timeout 30: Docker's default of 10 s is shorter than mlapp's 25 s drain.
# --network host avoids the NAT hop; use -p 8080:8080 instead where that is not wanted.
docker run -d --name mlapp --restart unless-stopped --stop-timeout 30 --network host \
    -e MODEL_URI="$MODEL_URI" -e AWS_REGION="$region" \
    -e MLAPP_MODEL_POLL_SECONDS="${MLAPP_MODEL_POLL_SECONDS:-0}" \
    --log-driver "${LOG_DRIVER:-json-file}" \
    "$IMAGE" serve
echo "started; waiting for /ping"
for _ in $(seq 1 120); do
    if curl -fsS -m 2 http://localhost:8080/ping >/dev/null 2>&1; then
        curl -fsS http://localhost:8080/info
        echo
        exit 0
    fi
    sleep 1
done
echo "error: not ready after 120 s; docker logs mlapp says why" >&2
exit 1
