# syntax=docker/dockerfile:1
# The CPU image: Triton 2.51 from the nvidia-pytriton wheel, the network in OpenVINO inside the Python backend.
# NOT BUILT HERE: the development machines have no container runtime (README "Running at scale").
#   docker build -f deploy/docker/cpu.Dockerfile -t sritm-triton-cpu:0.1.0 .
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends make ffmpeg openssl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/sritm
COPY . .
# net: torch for the ONNX export at build time; serve: pytriton (tritonserver) and OpenVINO.
RUN python -m venv .venv \
 && .venv/bin/pip install --no-cache-dir '.[net,serve]' \
 && .venv/bin/python -m sritm_serving.triton_server --install-stub \
 && .venv/bin/python -m build.export_onnx \
 # The precision is chosen on the machine that serves: f32 here is exact everywhere. To serve bf16 on AMX or
 # AVX512-BF16 nodes, build on such a node with --cpu-precision auto (the precision gate runs there).
 && .venv/bin/python -m build.assemble_repository --target cpu --cpu-precision f32

ENV PATH=/opt/sritm/.venv/bin:$PATH \
    HTTP_PORT=8000 GRPC_PORT=8001 METRICS_PORT=8002
EXPOSE 8000 8001 8002
# `sritm probe` (the liveness check) is on PATH from the same install.
ENTRYPOINT ["python", "-m", "sritm_serving.triton_server"]
CMD ["--model-repository=/opt/sritm/model_repository", "--host=0.0.0.0"]
