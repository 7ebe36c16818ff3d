# The consumer image (`docker compose up --build`, deploy/kubernetes/).
# Installs exactly requirements.lock (hashes checked), then the project without
# dependencies, compiled, in a build stage; the runtime stage gets the virtual
# environment only.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, in their own layer: rebuilt only when the lock file changes.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements.lock
# The per-event modules are compiled with mypyc (hatch_build.py; about a fifth less
# CPU an event): a C compiler (the base image's current gcc: build stage only, not
# shipped), and mypy from the dev lock (hashes checked) in a venv of this stage only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-dev.lock ./
RUN python -m venv /opt/build && /opt/build/bin/pip install --require-hashes -r requirements-dev.lock
COPY pyproject.toml README.md hatch_build.py ./
COPY consumer ./consumer
COPY schemas ./schemas
# The build backend (hatchling) is in the locks: no unpinned download here. The wheel
# holds each compiled module beside its source; Python imports the compiled one.
RUN FOLLOWUPS_NATIVE=1 /opt/build/bin/pip wheel --no-deps --no-build-isolation -w /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl

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
