# intentserve images (BuildKit, the default builder since Docker 23, needs no syntax directive).
#
#   target       contents                                          backends
#   runtime      (default) base install: onnxruntime + tokenizers  onnx, onnx-int8
#   runtime-torch base install + extra "torch" (CPU wheel)         torch, torch-int8, onnx, onnx-int8
#   runtime-bundled  runtime + a model package baked in            onnx, onnx-int8
#
#   docker build -t intentserve .
#   docker build --target runtime-torch -t intentserve:torch .
#
# The model package is NOT in the image by default: mount one (read-only) at /models/package,
# which is INTENT_MODEL_DIR:
#
#   docker run --rm -p 8000:8000 -v "$PWD/models/clinc150-minilm:/models/package:ro" intentserve
#
# To bake a package in instead, build the runtime-bundled target; its package is the named build
# context "model" (one command with BuildKit, podman and buildah):
#
#   docker build --target runtime-bundled --build-context model=models/clinc150-minilm -t intentserve:bundled .
#   docker build --target runtime-bundled --build-context model=docker-image://registry.example/intent-models:student .
#     (any image that holds the package at its root)
#
# Without Docker: podman build --format docker ... (podman keeps HEALTHCHECK only in the docker format).
#
# Size of the default runtime image, measured by `pip install .` (no extras) into a fresh Python 3.11
# venv: 245 MiB with pip + setuptools, 222 MiB without them (removed below; du -sh: 233M). The big
# parts: onnxruntime 78M, numpy + numpy.libs 73M, uvloop 14M, tokenizers 11M, hf_xet 11M,
# huggingface_hub 8M. Plus python:3.11-slim (~130 MB): about 350-360 MB uncompressed, without a
# model package. No torch, no transformers. runtime-torch adds about 1 GB (CPU torch 754M,
# transformers 119M, sympy 80M, networkx 19M, ...).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------------
# builder: a venv at /opt/venv (same path and Python as the runtime, so its scripts keep working)
# with the base install only: the ONNX serving path (see pyproject: no torch, no transformers).
# Only app/ is copied: compression/ is the offline pipeline and is not served.
FROM python-base AS builder
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir . && pip uninstall --yes pip setuptools

# builder-torch: the same plus the extra "torch". torch comes from the CPU index first; the pinned
# torch==2.13.0 of the extra is then already satisfied by 2.13.0+cpu, so no CUDA wheels are pulled.
# (DL3013: the extra's versions are pinned in pyproject.toml.)
FROM python-base AS builder-torch
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir ".[torch]" \
 && pip uninstall --yes pip setuptools

# ---------------------------------------------------------------------------------------------------
# runtime-base: everything but the venv. Non-root, listens on all interfaces inside the container,
# reads the package from /models/package.
FROM python-base AS runtime-base
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
 && mkdir -p /models/package
WORKDIR /srv
ENV INTENT_HOST=0.0.0.0 \
    INTENT_PORT=8000 \
    INTENT_MODEL_DIR=/models/package
EXPOSE 8000
# Liveness with the stdlib only (no curl in the image); urlopen raises, so exits 1, on non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:' + os.environ.get('INTENT_PORT', '8000') + '/healthz', timeout=4)"]
USER 10001:10001
CMD ["python", "-m", "app"]

# ---------------------------------------------------------------------------------------------------
FROM runtime-base AS runtime-torch
COPY --from=builder-torch /opt/venv /opt/venv

# ---------------------------------------------------------------------------------------------------
# Baked-in model package (see the header): "model" is a named build context
# (--build-context model=DIR, or model=docker-image://IMAGE for an image holding the package at its root),
# copied directly, since a stage reached only through `FROM ${ARG}` is skipped as unused by buildah/podman.
FROM runtime-base AS runtime-bundled
COPY --from=builder /opt/venv /opt/venv
# Owned by root and not writable by the service user: the service cannot rewrite its own model.
# hadolint ignore=DL3022
COPY --from=model . /models/package/

# ---------------------------------------------------------------------------------------------------
# Default target (last stage): ONNX backends only, package from a volume at /models/package.
FROM runtime-base AS runtime
COPY --from=builder /opt/venv /opt/venv
