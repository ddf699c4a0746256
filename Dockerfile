# Slim runtime image for the gridwatch worker and API.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY configs ./configs
COPY models ./models
# [postgres]: the psycopg 3 driver, so api.database_url may be postgresql://...
RUN pip install ".[postgres]" && useradd --create-home gridwatch && mkdir -p /data && chown gridwatch /data
USER gridwatch
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["gridwatch"]
CMD ["run", "--config", "configs/demo.yaml"]
