# syntax=docker/dockerfile:1
# Build:   docker build -t onboarding .
# Serve:   docker run -p 50051:50051 -e ONBOARDING_DATABASE_URL=... -e ONBOARDING_SECRET_KEY=... onboarding
# Migrate: docker run --rm -e ONBOARDING_DATABASE_URL=... -e ONBOARDING_SECRET_KEY=... onboarding onboarding migrate

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p src/onboarding && touch src/onboarding/__init__.py \
    && pip install . && pip uninstall -y onboarding
COPY src ./src
RUN pip install --no-deps . \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
    && python -m compileall -q /opt/venv/lib

FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 onboarding \
    && useradd --system --uid 10001 --gid onboarding --no-create-home --home-dir /app onboarding \
    && mkdir /app && chown onboarding:onboarding /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ONBOARDING_LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
# gRPC, and Prometheus metrics (ONBOARDING_METRICS_PORT)
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
ENTRYPOINT []
CMD ["onboarding", "serve"]
