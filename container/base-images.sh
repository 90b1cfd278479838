#!/usr/bin/env bash
# Makes the base images that the Dockerfiles name by default (debian:bookworm-slim for the
# runtime stage, debian:bookworm for the build stage) from Debian's own packages, with
# debootstrap, for machines that reach no container registry. Where a registry is reachable
# this is not needed: `docker build` pulls the public images of the same names.
#
#   container/base-images.sh [--force]
#
# Needs root (debootstrap) and Docker. DEBIAN_MIRROR overrides the mirror (default: the one
# apt uses on this machine, else deb.debian.org).
set -euo pipefail

force=${1:-}
if [ "$force" != "--force" ] &&
    docker image inspect debian:bookworm-slim >/dev/null 2>&1 &&
    docker image inspect debian:bookworm >/dev/null 2>&1; then
    echo "base images present: debian:bookworm-slim, debian:bookworm"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq debootstrap >/dev/null
fi

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi
security=${mirror%/debian*}/debian-security

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" | grep -E "^(E|W):" || true
[ -x "$root/usr/bin/apt-get" ] || { echo "debootstrap failed" >&2; exit 1; }

# The same sources as Debian's official images: updates and security fixes included.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Slim, as debian:bookworm-slim is: no documentation or translations, now or from later
# installs, and no package lists or caches.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Install-Recommends "false";
APT
find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
rm -rf "$root"/usr/share/{man,info,locale,lintian}/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/* "$root"/var/log/* "$root"/tmp/*

tar -C "$root" -c . | docker import - debian:bookworm-slim >/dev/null
# The build stage's base: the same system (the public debian:bookworm only adds packages the
# build stage installs anyway).
docker tag debian:bookworm-slim debian:bookworm
docker image ls debian --format '{{.Repository}}:{{.Tag}} {{.Size}}'
