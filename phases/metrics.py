"""The metrics sink: how phases report figures without knowing the tracker.

Phases call ``sink.log_metrics`` / ``log_params`` / ``log_artifact`` / ``log_dict``. The
task layer hands them an :class:`MlflowSink` bound to the phase's MLflow run (through
``MlflowClient``, never the fluent API, so concurrent runs cannot cross); tests use
:class:`ListSink`; a subprocess finds its run through ``MLFLOW_RUN_ID``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

_BAD = re.compile(r"[^A-Za-z0-9_\-./ :]")


def metric_name(name: str) -> str:
    """MLflow refuses commas and most punctuation in names (lm-eval emits ``acc,none``)."""
    return _BAD.sub("_", name)


class MetricsSink(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, obj: Any, name: str) -> None: ...
    def subprocess_env(self) -> dict[str, str]: ...

    # Optional: ``with sink.nested("sft") as child:`` logs a stage into its own child run (see
    # :func:`nested`, which falls back to the sink itself for sinks without the method).


@contextmanager
def nested(sink: MetricsSink, name: str) -> Iterator[MetricsSink]:
    """``sink.nested(name)`` when the sink has it, else the sink itself."""
    if hasattr(sink, "nested"):
        with sink.nested(name) as child:
            yield child
    else:
        yield sink


class NullSink:
    def log_metrics(self, metrics, step=None):
        pass

    def log_params(self, params):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def log_dict(self, obj, name):
        pass

    def subprocess_env(self):
        return {}

    @contextmanager
    def nested(self, name: str) -> Iterator["NullSink"]:
        yield NullSink()


class ListSink:
    """Keeps everything in memory: for tests and notebooks."""

    def __init__(self) -> None:
        self.metrics: list[tuple[str, float, int | None]] = []
        self.params: dict[str, Any] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.dicts: dict[str, Any] = {}
        self.children: dict[str, "ListSink"] = {}  # nested stages by name

    def log_metrics(self, metrics, step=None):
        self.metrics += [(metric_name(k), float(v), step) for k, v in metrics.items()]

    @contextmanager
    def nested(self, name: str) -> Iterator["ListSink"]:
        child = self.children[name] = ListSink()
        yield child

    def log_params(self, params):
        self.params.update(params)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append((str(path), artifact_path))

    def log_dict(self, obj, name):
        self.dicts[name] = obj

    def subprocess_env(self):
        return {}

    def series(self, name: str) -> list[float]:
        return [v for k, v, _ in self.metrics if k == name]


class JsonlSink:
    """Appends one JSON line per event; survives crashes, readable with pandas."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, rec: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(rec, default=str) + "\n")

    def log_metrics(self, metrics, step=None):
        self._write({"t": time.time(), "step": step, "metrics": {metric_name(k): float(v) for k, v in metrics.items()}})

    def log_params(self, params):
        self._write({"t": time.time(), "params": params})

    def log_artifact(self, path, artifact_path=None):
        self._write({"t": time.time(), "artifact": str(path), "artifact_path": artifact_path})

    def log_dict(self, obj, name):
        self._write({"t": time.time(), "dict": name})

    def subprocess_env(self):
        return {}

    @contextmanager
    def nested(self, name: str) -> Iterator["JsonlSink"]:
        """A sibling file ``<stem>.<name>.jsonl`` for the stage."""
        yield JsonlSink(self.path.with_name(f"{self.path.stem}.{name}{self.path.suffix}"))


class MlflowSink:
    """Logs to one MLflow run through MlflowClient."""

    def __init__(self, run_id: str, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = self.client.tracking_uri

    def log_metrics(self, metrics, step=None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_name(k), float(v), now, step or 0) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_params(self, params):
        from mlflow.entities import Param

        batch = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[i : i + 100])

    def log_artifact(self, path, artifact_path=None):
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj, name):
        self.client.log_dict(self.run_id, obj, name)

    def subprocess_env(self):
        """What a child process needs to log into the same run (see sink_from_env)."""
        return {"MLFLOW_RUN_ID": self.run_id, "MLFLOW_TRACKING_URI": str(self.tracking_uri)}

    @contextmanager
    def nested(self, name: str) -> Iterator["MlflowSink"]:
        """A child run (tag ``mlflow.parentRunId``) in the same experiment, terminated on exit:
        FINISHED, or FAILED when the block raises. A stage gets its own params this way (MLflow
        refuses a changed param within one run)."""
        parent = self.client.get_run(self.run_id)
        child = self.client.create_run(parent.info.experiment_id, run_name=name, tags={"mlflow.parentRunId": self.run_id})
        status = "FAILED"
        try:
            yield MlflowSink(child.info.run_id, self.tracking_uri)
            status = "FINISHED"
        finally:
            self.client.set_terminated(child.info.run_id, status=status)


class TeeSink:
    def __init__(self, *sinks: MetricsSink) -> None:
        self.sinks = sinks

    def log_metrics(self, metrics, step=None):
        for s in self.sinks:
            s.log_metrics(metrics, step)

    def log_params(self, params):
        for s in self.sinks:
            s.log_params(params)

    def log_artifact(self, path, artifact_path=None):
        for s in self.sinks:
            s.log_artifact(path, artifact_path)

    def log_dict(self, obj, name):
        for s in self.sinks:
            s.log_dict(obj, name)

    def subprocess_env(self):
        env: dict[str, str] = {}
        for s in self.sinks:
            env.update(s.subprocess_env())
        return env

    @contextmanager
    def nested(self, name: str) -> Iterator["TeeSink"]:
        with ExitStack() as stack:
            yield TeeSink(*(stack.enter_context(nested(s, name)) for s in self.sinks))


def sink_from_env(fallback_jsonl: str | Path | None = None) -> MetricsSink:
    """For subprocesses: attach to ``MLFLOW_RUN_ID`` when set, else a JSONL file or nothing."""
    sinks: list[MetricsSink] = []
    if os.environ.get("MLFLOW_RUN_ID"):
        sinks.append(MlflowSink(os.environ["MLFLOW_RUN_ID"]))
    if fallback_jsonl:
        sinks.append(JsonlSink(fallback_jsonl))
    return TeeSink(*sinks) if sinks else NullSink()


def write_table(rows: list[dict], name: str, sink: MetricsSink) -> None:
    """Log a list of row dicts as an MLflow-style JSON table artifact."""
    cols = sorted({k for r in rows for k in r})
    table = {"columns": cols, "data": [[r.get(c) for c in cols] for r in rows]}
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_text(json.dumps(table, default=str))
        sink.log_artifact(p)
