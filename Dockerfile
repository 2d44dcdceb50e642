# syntax=docker/dockerfile:1.7
#
# One image for every Atelier service. The command picks the service:
#   docker run IMAGE python -m atelier_gateway      (profiles, context, dispatch, media, workers)
# A provider worker is `python -m atelier_workers` with ATELIER_WORKERS_PROVIDER=<provider>.
#
# Build: docker build -t atelier .      (docker-compose.yml and deploy/ use this file)

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- manifests: only what decides the dependency set, so that layer stays cached while code changes
FROM python:${PYTHON_VERSION}-slim-bookworm AS manifests
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
RUN find libs services -type f ! -name pyproject.toml -delete

# --- build: a virtualenv at /app/.venv holding the services and their libs, nothing for development
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# The services only: not the dev stack (it ships nats-server and SeaweedFS binaries) nor the fakes.
COPY --from=manifests /src ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace \
      --package atelier-gateway --package atelier-profiles --package atelier-context \
      --package atelier-dispatch --package atelier-media --package atelier-workers
COPY libs ./libs
COPY services ./services
# Non-editable: the runtime stage copies the virtualenv alone, without the source tree.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
      --package atelier-gateway --package atelier-profiles --package atelier-context \
      --package atelier-dispatch --package atelier-media --package atelier-workers

# --- runtime
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG UID=10001
RUN groupadd --system --gid ${UID} atelier \
    && useradd --system --uid ${UID} --gid atelier --home-dir /app --no-create-home atelier
# Owned by root and not writable by the service user: the code cannot be changed at run time.
COPY --from=build --chown=root:root /app/.venv /app/.venv
# Only /tmp is writable in Kubernetes (read-only root filesystem): SQLite fallbacks land there.
# A container listens on every interface (the local default is 127.0.0.1).
ENV PATH=/app/.venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATELIER_VAR_DIR=/tmp/atelier \
    ATELIER_LOG_JSON=true \
    ATELIER_GATEWAY_HOST=0.0.0.0 \
    ATELIER_PROFILES_HOST=0.0.0.0 \
    ATELIER_CONTEXT_HOST=0.0.0.0 \
    ATELIER_DISPATCH_HOST=0.0.0.0 \
    ATELIER_MEDIA_HOST=0.0.0.0 \
    ATELIER_WORKERS_HOST=0.0.0.0
WORKDIR /app
# Numeric, so Kubernetes can verify runAsNonRoot without resolving the name.
USER ${UID}:${UID}
# gateway 8080, profiles 8081, context 8082, dispatch 8083, media 8084, workers 8090
EXPOSE 8080 8081 8082 8083 8084 8090
CMD ["python", "-m", "atelier_gateway"]
