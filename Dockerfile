# User code image: the icp_pipeline package with its pinned dependencies, served by a Dagster
# code server. The webserver and daemon run Dagster's own images (or this one) and reach it on 4000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_DISABLE_TELEMETRY=1 \
    RUNTIME__DLTHUB_TELEMETRY=false

RUN groupadd --system icp && useradd --system --gid icp --home-dir /app --shell /usr/sbin/nologin icp

WORKDIR /app
# The package finds data_contracts/ beside itself, so the project is installed in place (editable).
COPY pyproject.toml README.md ./
COPY icp_pipeline ./icp_pipeline
COPY data_contracts ./data_contracts
COPY .dlt ./.dlt
RUN pip install --upgrade pip && pip install -e . \
    && mkdir -p /data && chown -R icp:icp /app /data

USER icp
# The DuckDB warehouse, dlt state, reports and the alert outbox live on this volume.
ENV ICP_WAREHOUSE=/data/warehouse.duckdb \
    ICP_SOURCE_DIR=/data/drop
VOLUME ["/data"]
EXPOSE 4000

CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "4000", "--module-name", "icp_pipeline.definitions"]
