#!/usr/bin/env bash
# A Spark standalone cluster on loopback from the pyspark installation: one master, N workers.
#   infra/spark/local-cluster.sh start [WORKERS=2]   -> spark://127.0.0.1:7077
#   infra/spark/local-cluster.sh stop
# Point the pipeline at it with --set data.spark_master=spark://127.0.0.1:7077
# (or `lifecycle dedup --spark-master spark://127.0.0.1:7077 ...`).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
RUN=${LIFECYCLE_HOME:-.lifecycle}/spark-cluster
MASTER=spark://127.0.0.1:${SPARK_MASTER_PORT:-7077}
# The venv interpreter by its own path (resolving the link would lose the venv).
export SPARK_HOME PYSPARK_PYTHON="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" SPARK_LOCAL_IP=127.0.0.1

start() {
  mkdir -p "$RUN"
  nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "${MASTER##*:}" \
    --webui-port 8080 >"$RUN/master.log" 2>&1 &
  echo $! >"$RUN/master.pid"
  for i in $(seq 1 "${1:-2}"); do
    nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "$MASTER" --host 127.0.0.1 \
      --cores 1 --memory 2g --webui-port $((8080 + i)) --work-dir "$RUN/work-$i" >"$RUN/worker-$i.log" 2>&1 &
    echo $! >"$RUN/worker-$i.pid"
  done
  for _ in $(seq 60); do  # ready when every worker has registered with the master
    n=$(cat "$RUN"/worker-*.log 2>/dev/null | grep -c "Successfully registered with master" || true)
    [ "$n" -ge "${1:-2}" ] && { echo "$MASTER"; return 0; }
    sleep 1
  done
  echo "workers did not register; see $RUN/*.log" >&2
  return 1
}

stop() {
  for f in "$RUN"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done
}

case "${1:-}" in
  start) start "${2:-2}" ;;
  stop) stop ;;
  *) echo "usage: $0 start [WORKERS] | stop" >&2; exit 2 ;;
esac
