"""Unpacks the GPU wheels for container/Dockerfile.gpu: ONNX Runtime's capi/ libraries into
/ort (kept together: providers are loaded from libonnxruntime's folder) and the CUDA
user-space libraries into /cuda/lib."""
import glob
import os
import sys
import zipfile

wheels, ort, cuda = sys.argv[1], "/ort", "/cuda/lib"
os.makedirs(ort, exist_ok=True)
os.makedirs(cuda, exist_ok=True)
for wheel in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            base = os.path.basename(name)
            if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
                dest = ort
            elif name.startswith("nvidia/") and "/lib/" in name and ".so" in base:
                dest = cuda
            else:
                continue
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
