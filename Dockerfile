# The consumer image for `docker compose up` (machines with a Docker engine).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
RUN pip install --no-cache-dir . && useradd --system --uid 10001 followups
USER followups
ENTRYPOINT ["followup-consumer"]
CMD ["run"]
