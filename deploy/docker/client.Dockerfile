# syntax=docker/dockerfile:1
# The client image for the film Jobs (deploy/k8s/jobs/): the SDK and the sritm CLI only (no torch, no server).
# PyAV's wheel carries FFmpeg with libx265. NOT BUILT HERE: the development machines have no container runtime.
#   docker build -f deploy/docker/client.Dockerfile -t sritm-client:0.1.0 .
FROM python:3.11-slim-bookworm

WORKDIR /opt/sritm
COPY pyproject.toml README.md ./
COPY sritm_core sritm_core
COPY sritm_serving sritm_serving
COPY gpgmnet gpgmnet
COPY client client
RUN pip install --no-cache-dir . && useradd --create-home sritm
USER sritm
ENTRYPOINT ["sritm"]
