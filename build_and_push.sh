#!/usr/bin/env bash
# Builds the mlapp image and pushes it to Amazon ECR, as AWS's bring-your-own-container sample
# does, with an immutable tag (the git commit) besides the one asked for.
#
#   ./build_and_push.sh [--gpu] [--dry-run] IMAGE_NAME [TAG]
#
#   --gpu      build container/Dockerfile.gpu (tags get a -gpu suffix)
#   --dry-run  print every command that would change something, run none of them
#
# The account comes from `aws sts get-caller-identity`; the region from AWS_REGION,
# AWS_DEFAULT_REGION, or the profile (`aws configure get region`). The ECR repository IMAGE_NAME
# is created if missing. Images are built for linux/amd64, what SageMaker runs.
set -euo pipefail

usage() {
    echo "usage: $0 [--gpu] [--dry-run] IMAGE_NAME [TAG]"
}

fail() {
    echo "error: $*" >&2
    exit 1
}

gpu=0
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
    --gpu) gpu=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    --) shift; break ;;
    -*)
        usage >&2
        fail "unknown option $1"
        ;;
    *) break ;;
    esac
    shift
done
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    usage >&2
    exit 2
fi
image=$1
tag=${2:-}
if ! [[ "$image" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]]; then
    fail "\"$image\" is not a valid ECR repository name (lower case letters, digits, . _ - /)"
fi
if [ -n "$tag" ] && ! [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
    fail "\"$tag\" is not a valid image tag"
fi

# Commands that change something go through here; --dry-run prints them instead.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

command -v aws >/dev/null || fail "the AWS CLI (aws) is not installed: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
command -v docker >/dev/null || fail "docker is not installed"
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ "$dry_run" = 0 ] && ! docker info >/dev/null 2>&1; then
    fail "cannot reach the Docker daemon (is it running, and may this user use it?)"
fi

account=$(aws sts get-caller-identity --query Account --output text 2>/dev/null) ||
    fail "aws sts get-caller-identity failed: not logged in to AWS (aws configure, aws sso login, or AWS_PROFILE)"
[[ "$account" =~ ^[0-9]{12}$ ]] || fail "aws sts get-caller-identity gave \"$account\", not an account id"

region=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
if [ -z "$region" ]; then
    region=$(aws configure get region 2>/dev/null || true)
fi
[ -n "$region" ] || fail "no AWS region: set AWS_REGION, or run aws configure set region REGION"

commit=$(git rev-parse --short=12 HEAD 2>/dev/null) ||
    fail "not a git checkout: the immutable tag is the git commit"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    # A tag names one build of one commit; uncommitted changes would make it lie.
    fail "the checkout has uncommitted changes: commit them first, so that tag $commit means this build"
fi

dockerfile=Dockerfile
suffix=
if [ "$gpu" = 1 ]; then
    dockerfile=container/Dockerfile.gpu
    suffix=-gpu
fi
registry="$account.dkr.ecr.$region.amazonaws.com"
repo="$registry/$image"
tags=("$repo:$commit$suffix")
if [ -n "$tag" ]; then
    tags+=("$repo:$tag$suffix")
fi

if ! aws ecr describe-repositories --repository-names "$image" --region "$region" >/dev/null 2>&1; then
    echo "creating the ECR repository $image in $region"
    run aws ecr create-repository --repository-name "$image" --region "$region" \
        --image-scanning-configuration scanOnPush=true
fi

echo "logging in to $registry"
if [ "$dry_run" = 1 ]; then
    echo "+ aws ecr get-login-password --region $region | docker login --username AWS --password-stdin $registry"
else
    aws ecr get-login-password --region "$region" |
        docker login --username AWS --password-stdin "$registry" >/dev/null ||
        fail "docker login to $registry failed"
fi

build=(docker build --platform linux/amd64 -f "$dockerfile")
for t in "${tags[@]}"; do
    build+=(-t "$t")
done
run "${build[@]}" .
for t in "${tags[@]}"; do
    run docker push "$t"
done
echo "pushed: ${tags[*]}"
