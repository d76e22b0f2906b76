#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
# POSTGRES_DB is Prefect's database; this adds MLflow's, owned by the same user.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"$MLFLOW_DB\" OWNER \"$POSTGRES_USER\";"
