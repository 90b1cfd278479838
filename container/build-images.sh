#!/usr/bin/env bash
# Builds the images the container tests run, from nothing but package registries: the Debian
# base images (base-images.sh, skipped when present), the mlapp image from the repository's
# Dockerfile, and nginx with the shipped load-balancer config.
#
#   container/build-images.sh [MLAPP_IMAGE [NGINX_IMAGE [GPU_IMAGE]]]
#
# Defaults: mlapp:test, mlapp-nginx:test, mlapp-gpu:test. The GPU image (container/
# Dockerfile.gpu) reuses the CPU image's build stage, so it costs the GPU wheels' download.
#
# Builds use the host's network (--network host); extra CA certificates that this machine
# trusts (/usr/local/share/ca-certificates, e.g. a TLS-inspecting proxy's) are passed to the
# build stage only, never into the image that ships.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mlapp_image=${1:-mlapp:test}
nginx_image=${2:-mlapp-nginx:test}
gpu_image=${3:-mlapp-gpu:test}

"$repo/container/base-images.sh"

extra_ca=""
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] && extra_ca+="$(cat "$crt")"$'\n'
done

started=$(date +%s)
# The classic builder: BuildKit is not in every engine these images are built on.
DOCKER_BUILDKIT=0 docker build --network host --build-arg EXTRA_CA_CERTS="$extra_ca" \
    -t "$mlapp_image" "$repo"
DOCKER_BUILDKIT=0 docker build --network host -t "$nginx_image" "$repo/container/deploy/nginx"
DOCKER_BUILDKIT=0 docker build --network host --build-arg EXTRA_CA_CERTS="$extra_ca" \
    -f "$repo/container/Dockerfile.gpu" -t "$gpu_image" "$repo"
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.1f MB", $1/1e6}'; }
echo "built $mlapp_image ($(size "$mlapp_image")), $gpu_image ($(size "$gpu_image")) and $nginx_image in $(($(date +%s) - started)) s"
