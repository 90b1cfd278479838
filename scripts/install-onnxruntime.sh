#!/usr/bin/env bash
# Installs ONNX Runtime's shared libraries from the PyPI wheel (the only registry this project may
# download from) into a folder that mlapp searches by default.
#
#   scripts/install-onnxruntime.sh [DEST]      DEST defaults to .ort/lib in the repository
#
# The wheel's sha256 is pinned, so a changed or corrupted download fails instead of being used.
# The whole capi/ set is kept together: ONNX Runtime loads its providers from the directory of
# the libonnxruntime.so it was loaded from.
set -euo pipefail

ORT_VERSION="1.31.1"
WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${repo_root}/.ort/lib}"
lib="${dest}/libonnxruntime.so.${ORT_VERSION}"

if [[ -f "${lib}" ]]; then
    echo "onnxruntime ${ORT_VERSION} already installed at ${lib}"
    exit 0
fi

python="$(command -v python3 || command -v python || true)"
if [[ -z "${python}" ]]; then
    echo "error: python3 with pip is needed to fetch the onnxruntime wheel" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

"${python}" -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
    "onnxruntime==${ORT_VERSION}" -d "${tmp}"

actual="$(sha256sum "${tmp}/${WHEEL}" | cut -d' ' -f1)"
if [[ "${actual}" != "${WHEEL_SHA256}" ]]; then
    echo "error: ${WHEEL} has sha256 ${actual}, expected ${WHEEL_SHA256}" >&2
    exit 1
fi

mkdir -p "${dest}"
"${python}" - "${tmp}/${WHEEL}" "${dest}" <<'PY'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        # The pybind module is Python's binding, not part of the C API mlapp loads.
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
PY
echo "installed onnxruntime ${ORT_VERSION} into ${dest}"
ls -l "${dest}"
