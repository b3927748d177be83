# syntax=docker/dockerfile:1
# One image for every ML-taxi Python service: the `taxi` command, taxi-producer, taxi-predictor,
# taxi-aggregator and taxi-dashboard. docker-compose.yml picks the command of each service.

ARG PYTHON_IMAGE=python:3.11-slim
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# --- build: the workspace's locked dependencies, then the workspace itself, in /app/.venv
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /bin/uv
# The image's own Python, never a downloaded one: the runtime stage has the same at the same path.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# Third-party packages first: this layer is rebuilt only when uv.lock or a pyproject.toml changes.
COPY pyproject.toml uv.lock README.md ./
COPY libs/taxi_events/pyproject.toml libs/taxi_events/
COPY libs/taxi_model/pyproject.toml libs/taxi_model/
COPY libs/taxi_stream/pyproject.toml libs/taxi_stream/
COPY libs/taxi_kafka/pyproject.toml libs/taxi_kafka/
COPY services/pyproject.toml services/
COPY dashboard/pyproject.toml dashboard/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace

# Then the project's own packages, installed as wheels (not editable), so /src is not needed later.
COPY libs libs
COPY services services
COPY dashboard dashboard
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

# --- runtime: the virtual environment only, run by an unprivileged user
FROM ${PYTHON_IMAGE}
# uid 1000: usually the first user of a Linux host, so a bind-mounted ./models stays writable.
RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin taxi \
    && mkdir -p /app/data /app/models \
    && chown taxi:taxi /app/models
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
# Commands use the default paths data/<source>.csv and models/taxi_pipeline.skops from here.
WORKDIR /app
USER taxi
CMD ["taxi", "--help"]
