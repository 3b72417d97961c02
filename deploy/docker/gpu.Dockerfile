# syntax=docker/dockerfile:1
# The GPU image: NGC Triton 24.10 (Triton 2.51, TensorRT and the Python backend), the repository built for
# --target gpu-torch (PyTorch in the Python backend). NOT BUILT HERE: no container runtime and no GPU on the
# development machines (README "Running at scale").
#   docker build -f deploy/docker/gpu.Dockerfile -t sritm-triton-gpu:0.1.0 .
# For TensorRT plans instead (--target gpu), build them on the serving GPU: python -m build.build_engine.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The project needs Python 3.11; the container's Python backend stub is built for its 3.10. The
# nvidia-pytriton 0.7.0 wheel carries Triton 2.51's stub for 3.11, which replaces it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common ffmpeg \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sritm
COPY . .
# torch==2.13.0 from the CUDA index (the CPU wheel is what the development machines use).
RUN python3.11 -m venv .venv \
 && .venv/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu126 torch==2.13.0 \
 && .venv/bin/pip install --no-cache-dir '.[net,serve]' \
 && cp .venv/lib/python3.11/site-packages/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub \
       /opt/tritonserver/backends/python/triton_python_backend_stub \
 && .venv/bin/python -m build.assemble_repository --target gpu-torch

# The stub imports the project and its dependencies from this venv.
ENV PATH=/opt/sritm/.venv/bin:$PATH \
    PYTHONPATH=/opt/sritm:/opt/sritm/client
EXPOSE 8000 8001 8002
