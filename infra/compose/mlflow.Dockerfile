# The MLflow tracking server: MLflow plus the Postgres driver and boto3 for S3 (MinIO)
# artifacts, which MLflow's own image does not include.
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" psycopg2-binary boto3
EXPOSE 5000
