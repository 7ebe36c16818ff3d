# The consumer image (`docker compose up --build`, deploy/kubernetes/).
# Installs exactly requirements.lock (hashes checked), then the project without
# dependencies, in a build stage; the runtime stage gets the virtual environment only.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, in their own layer: rebuilt only when the lock file changes.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
# The build backend (hatchling) is in the lock: no unpinned download here.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin followups
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080
USER 10001:10001
EXPOSE 8080
# Liveness: GET /health/live answers 200 while the ingest and dispatch loops run; an
# outage of the database or the broker (which the service waits out) does not make the
# container unhealthy. Readiness (/health/ready) and the full report (/health) are for
# orchestrators and people. The image has no curl: Python's urllib does the request.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["followup-consumer"]
CMD ["run"]
