"""``lifecycle deploy``: the pipeline and the evaluation flow as deployments of a running Prefect server.

Three deployments on the process work pool ``lifecycle-pool`` (created when missing), the same as
``infra/prefect.yaml`` declares:

- ``llm-lifecycle/nightly``: the whole pipeline on a cron schedule with an explicit timezone;
- ``llm-lifecycle/on-demand``: the same flow without a schedule, for runs started from the UI;
- ``evaluate-model/rescore``: score one model (``flows/evaluate_model.py``).

Every one enforces its parameter schema: the server refuses a flow run whose parameters do not fit
(an unknown preset, an override key or value the config schema rejects, a phase not in the list),
before a worker picks it up.

Two trainings never overlap: both pipeline deployments send their runs to the pool's work queue
``training``, whose concurrency limit is 1, so a worker is handed one pipeline run at a time and the
others wait in the queue as Scheduled. A deployment's own ``concurrency_limit`` counts the runs of
that one deployment only (Prefect 3.8 backs it with a limit named after the deployment), so it could
not keep a UI run from overlapping the night's; each pipeline deployment still gets limit 1 with
collision strategy ENQUEUE, which the UI shows on the deployment and which keeps a run that is
started past the queue (another worker pool, an edited queue) waiting instead of running beside
another. A global concurrency limit would need code inside the flow, and the embedded default (a
temporary server per run) would make it count nothing.

The code is not copied anywhere: a worker runs it from a checkout, with the venv it was started from
(``lifecycle up`` starts one). The deployments pull it with infra/prefect.yaml's own pull steps (check
that ``LIFECYCLE_REPO`` is a checkout, then work in it), with ``LIFECYCLE_REPO`` resolved as
``prefect deploy`` resolves it: ``--repo``, else ``$LIFECYCLE_REPO``, else this checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phases.config import PHASE_NAMES, load_config
from phases.errors import ConfigError, LifecycleError

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "infra" / "prefect.yaml"
REPO_PLACEHOLDER = "{{ $LIFECYCLE_REPO }}"
POOL = "lifecycle-pool"  # also flows/stack.py's and infra/prefect.yaml's
TRAINING_QUEUE = "training"
PIPELINE = "flows/pipeline.py:lifecycle_pipeline"
EVALUATE = "flows/evaluate_model.py:evaluate_model"
DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment, as ``lifecycle deploy`` applies it and ``infra/prefect.yaml`` declares it."""

    entrypoint: str
    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    work_queue: str | None = None  # None: the pool's default queue
    cron: str | None = None
    timezone: str | None = None
    concurrency_limit: int | None = None
    tags: tuple[str, ...] = ("llm-lifecycle",)


def specs(
    config: str = "tiny", overrides: dict[str, Any] | None = None, cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE
) -> list[DeploymentSpec]:
    """The three deployments, with the pipeline's default parameters."""
    pipeline = {"config": config, "overrides": dict(overrides or {}), "phases": list(PHASE_NAMES), "force": False}
    return [
        DeploymentSpec(
            PIPELINE,
            "nightly",
            "Retrain on fresh data every night; unchanged phases are reused, new data reruns from the data phase on.",
            pipeline,
            TRAINING_QUEUE,
            cron,
            timezone,
            1,
        ),
        DeploymentSpec(
            PIPELINE, "on-demand", "Run any subset of phases with any overrides from the UI.", pipeline, TRAINING_QUEUE, concurrency_limit=1
        ),
        DeploymentSpec(
            EVALUATE,
            "rescore",
            "Score one model (models:/NAME@ALIAS, models:/NAME/VERSION or a directory) on a config's evaluation suite; promotes nothing.",
            {"config": config},
        ),
    ]


def _api_url() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise LifecycleError(
            "lifecycle deploy needs a Prefect server: set PREFECT_API_URL (`lifecycle up` starts one and prints it), "
            "e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return url


def _check_schedule(cron: str, timezone: str) -> None:
    import pydantic
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except pydantic.ValidationError as e:
        why = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise ConfigError(f"schedule --cron {cron!r} --timezone {timezone!r} is invalid: {why}") from None


def _config_arg(config: str) -> str:
    """A YAML file by absolute path: the worker runs the flow from the repository, not from here."""
    p = Path(config)
    return str(p.resolve()) if p.suffix in (".yaml", ".yml") and p.is_file() else config


def ensure_pool(client, pool: str = POOL, queue_limit: int = 1) -> None:
    """The process work pool (created when missing) and its ``training`` queue with its concurrency limit."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        client.read_work_pool(pool)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
    try:
        queue = client.read_work_queue_by_name(TRAINING_QUEUE, work_pool_name=pool)
        if queue.concurrency_limit != queue_limit:
            client.update_work_queue(queue.id, concurrency_limit=queue_limit)
    except ObjectNotFound:
        client.create_work_queue(name=TRAINING_QUEUE, work_pool_name=pool, concurrency_limit=queue_limit, description="Pipeline runs, one at a time")


def pull_steps(repo: Path | str) -> list[dict[str, Any]]:
    """infra/prefect.yaml's pull steps with ``LIFECYCLE_REPO`` set to ``repo``."""
    import yaml

    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node.replace(REPO_PLACEHOLDER, str(repo)) if isinstance(node, str) else node

    return fill(yaml.safe_load(PREFECT_YAML.read_text())["pull"])


def _storage(source: Path, repo: Path | str):
    """The local checkout ``source`` to load the flow from, pulled on the worker by ``pull_steps(repo)``."""
    from prefect.runner.storage import LocalStorage

    class Checkout(LocalStorage):
        def to_pull_step(self) -> list[dict[str, Any]]:
            return pull_steps(repo)

    return Checkout(path=str(source))


def apply(spec: DeploymentSpec, source: Path, pool: str, repo: Path | str | None = None) -> str:
    """Apply one deployment through Prefect's RunnerDeployment; returns its id."""
    from prefect import Flow
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    flow = Flow.from_source(source=_storage(source, repo or source), entrypoint=spec.entrypoint)
    deployment = flow.to_deployment(
        name=spec.name,
        description=spec.description,
        parameters=spec.parameters,
        work_pool_name=pool,
        work_queue_name=spec.work_queue,
        schedules=[Cron(spec.cron, timezone=spec.timezone)] if spec.cron else [],
        concurrency_limit=ConcurrencyLimitConfig(limit=spec.concurrency_limit, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
        if spec.concurrency_limit
        else None,
        tags=list(spec.tags),
        enforce_parameter_schema=True,
    )
    return str(deployment.apply(work_pool_name=pool))


def deploy(
    config: str = "tiny",
    sets: list[str] | None = None,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    pool: str = POOL,
    source: Path = REPO,
    repo: str | None = None,
) -> list[dict[str, Any]]:
    """Validate everything, then create the pool and queue and apply the three deployments."""
    from flows.parameters import as_mapping

    sets = list(sets or [])
    cfg = load_config(config, sets)  # a bad preset or value fails here, naming it
    _check_schedule(cron, timezone)
    url = _api_url()
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    rows = []
    # Bound to this server for every call below (from_source and apply use get_client() themselves).
    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        ensure_pool(client, pool)
        for spec in specs(_config_arg(config), as_mapping(sets, cfg.to_dict()), cron, timezone):
            deployment_id = apply(spec, Path(source), pool, repo or os.environ.get("LIFECYCLE_REPO") or Path(source))
            flow_name = "llm-lifecycle" if spec.entrypoint == PIPELINE else "evaluate-model"
            rows.append({"name": f"{flow_name}/{spec.name}", "id": deployment_id, "spec": spec})
    return rows


def run(args) -> int:
    rows = deploy(args.config, args.overrides, args.cron, args.timezone, args.pool, repo=args.repo)
    for r in rows:
        s: DeploymentSpec = r["spec"]
        when = f"cron {s.cron!r} ({s.timezone})" if s.cron else "no schedule"
        queue = f"queue {s.work_queue} (1 run at a time)" if s.work_queue else "default queue"
        print(f"{r['name']:<28} {when:<26} {queue}  deployment {r['id']}")
    print(f"Work pool {args.pool}: start a worker with `prefect worker start --pool {args.pool}` (or `lifecycle up`).")
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("deploy", help="apply the pipeline's and the evaluation's deployments to the Prefect server at PREFECT_API_URL")
    d.add_argument("--config", default="tiny", help="preset or YAML file the deployments default to (default: tiny)")
    d.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="default override of the nightly run (repeatable)"
    )
    d.add_argument("--cron", default=DEFAULT_CRON, help=f"nightly schedule (default: {DEFAULT_CRON!r})")
    d.add_argument("--timezone", default=DEFAULT_TIMEZONE, help=f"IANA timezone of the schedule (default: {DEFAULT_TIMEZONE})")
    d.add_argument("--pool", default=POOL, help=f"process work pool, created when missing (default: {POOL})")
    d.add_argument("--repo", help="the checkout the workers run the code from (default: $LIFECYCLE_REPO, else this checkout)")
