"""``lifecycle``: run the pipeline (or part of it) from the command line.

The config is resolved and validated before anything heavy is imported, so a bad value
fails in about a second with one line naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flows import dedup_command, deploy, inference_commands, lineage_command
from phases.config import PHASE_NAMES, load_config
from phases.errors import LifecycleError


def _phases(text: str | None) -> list[str]:
    if not text:
        return list(PHASE_NAMES)
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in chosen if p not in PHASE_NAMES]
    if bad:
        raise LifecycleError(f"--phases: unknown phase(s) {', '.join(bad)}; choose from {','.join(PHASE_NAMES)}")
    return [p for p in PHASE_NAMES if p in chosen]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifecycle", description="An LLM's six development phases as one Prefect flow, traced in MLflow.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the pipeline (all phases, or --phases)")
    run.add_argument("--config", default="tiny", help="preset name in infra/configs (default: tiny) or a YAML file")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. pretrain.max_steps=20 (repeatable)"
    )
    run.add_argument("--phases", help=f"comma-separated subset of {','.join(PHASE_NAMES)}; the others' finished outputs are reused")
    run.add_argument("--force", action="store_true", help="rebuild the selected phases even if their output for this config is finished")
    run.add_argument("--dry-run", action="store_true", help="print the resolved config and what each phase would do, then exit")
    run.add_argument("--json", action="store_true", help="print the result as JSON")

    sv = sub.add_parser("schedule", help="run the pipeline on a cron schedule from this process (no work pool needed)")
    sv.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: nightly at 02:00 UTC)")
    sv.add_argument("--config", default="tiny", help="preset name or YAML file")
    sv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sv.add_argument("--name", default="nightly", help="deployment name")

    sw = sub.add_parser("sweep", help="scaling-law sweep: train several model widths on one token budget, fit L(N)")
    sw.add_argument("--config", default="tiny", help="preset name or YAML file")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sw.add_argument("--sizes", default="64,96,128", help="comma-separated hidden widths (default 64,96,128)")
    sw.add_argument("--tokens", type=int, default=200_000, help="training tokens per size")
    sw.add_argument("--fit-path", help="where to write the fit (default $LIFECYCLE_HOME/scaling/fit.json)")

    dedup_command.add_parser(sub)

    up = sub.add_parser("up", help="start a local Prefect server, a worker and an MLflow server on loopback")
    up.add_argument("--prefect-port", type=int, default=4200)
    up.add_argument("--mlflow-port", type=int, default=5000)
    sub.add_parser("down", help="stop the services `lifecycle up` started")
    inference_commands.add_parsers(sub)

    ev = sub.add_parser("evaluate", help="score one model (a directory or models:/NAME@ALIAS) on the config's evaluation suite")
    ev.add_argument("--model", required=True, help="model directory, models:/NAME@ALIAS or models:/NAME/VERSION")
    ev.add_argument("--config", default="tiny", help="preset whose data, align and evaluate sections build the suite")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="dotted override, e.g. evaluate.limit=16")
    ev.add_argument("--label", default="model", help="name of the model in the metrics (eval/LABEL/TASK/METRIC)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")

    lineage_command.add_parser(sub)
    deploy.add_parser(sub)

    pl = sub.add_parser("plan", help="size a model and a training run for a compute budget")
    budget = pl.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-flops", type=float, help="training compute in FLOPs, e.g. 1e20")
    budget.add_argument("--gpu-hours", type=float, help="GPU-hours of --gpu at --mfu")
    pl.add_argument("--gpu", default="H100", help="target GPU (cpu, A100, H100, H200, L4, A10G, V100)")
    pl.add_argument("--num-gpus", type=int, default=1)
    pl.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation to assume (default 0.4)")
    pl.add_argument("--tokens-available", type=float, help="tokens in your training data (for epochs)")
    pl.add_argument("--vocab-size", type=int, default=32000)
    pl.add_argument("--seq-len", type=int, default=2048)
    pl.add_argument("--loss-law", help="JSON of a fitted L(N,D) = E + A/N^alpha + B/D^beta (default: Chinchilla's D = 20 N)")
    pl.add_argument("--json", action="store_true", help="print the plan and DeepSpeed config as JSON")
    return p


def _dry_run(cfg, selected: list[str], force: bool = False) -> int:
    import yaml

    from flows.env import configure

    home = configure()  # checks that the home can be written; before Prefect is imported, which reads its settings once
    from flows.pipeline import plan

    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    print(f"\n# config hash {cfg.digest()}; outputs under {home / 'outputs'}")
    budget = _budget_line(cfg)
    if budget:
        print(budget)
    for row in plan(cfg, home, selected):
        if force and row["action"] == "reuse" and row["phase"] in selected:
            row["action"] = "rebuild"
        print(f"{row['phase']:<10} {row['action']:<8} key={row['key']}" + (f"  {row['uri']}" if row.get("uri") else ""))
    return 0


def _budget_line(cfg) -> str | None:
    """What a compute budget makes of the run: N, D and the pretraining steps that follow."""
    from phases.model.build import budget_plan
    from phases.pretrain.dsconfig import for_budget

    p = budget_plan(cfg.model, cfg.model.vocab_size)
    if p is None:
        return None
    world = cfg.pretrain.num_gpus * cfg.pretrain.num_nodes
    steps = for_budget(cfg.pretrain, p.to_dict(), cfg.model.seq_len, world).max_steps
    return (
        f"# budget {p.budget_flops:.3g} FLOPs ({p.method}): N={p.parameters:,} parameters "
        f"(hidden {p.hidden_size}, {p.num_layers} layers), D={p.tokens:,} tokens -> pretrain trains {steps} steps "
        f"(replacing pretrain.max_steps={cfg.pretrain.max_steps}; at vocab {cfg.model.vocab_size}: the trained "
        f"tokenizer's size may shift N slightly)"
    )


def _report(result: dict) -> None:
    print("\n=== llm-lifecycle run finished ===")
    print(f"MLflow parent run: {result['parent_run_id']}  (experiment {result['experiment_id']}, {result['tracking_uri']})")
    print(f"Outputs: {result['home']}/outputs")
    for phase, r in result["phases"].items():
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in r["headline"].items())
        print(f"  {phase:<10} {'reused' if r['reused'] else 'ran':<6} {figures}\n  {'':<10} {r['uri']}")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _plan(args) -> int:
    from phases.model.sizing import plan
    from phases.pretrain.dsconfig import deepspeed_for_plan

    law = json.loads(Path(args.loss_law).read_text()) if args.loss_law else None
    p = plan(
        vocab=args.vocab_size,
        seq_len=args.seq_len,
        budget_flops=args.budget_flops,
        gpu_hours=args.gpu_hours,
        gpu=args.gpu,
        num_gpus=args.num_gpus,
        mfu=args.mfu,
        tokens_available=int(args.tokens_available) if args.tokens_available else None,
        loss_law=law,
    )
    ds = deepspeed_for_plan(p)
    if args.json:
        print(json.dumps({"plan": p.to_dict(), "deepspeed": ds}, indent=2))
        return 0
    d = p.to_dict()
    print(f"Compute C = {p.budget_flops:.3g} FLOPs ({p.method})")
    print(
        f"Model     N = {p.parameters:,} parameters (target {p.target_parameters:,}): hidden {p.hidden_size}, "
        f"{p.num_layers} layers, {p.num_heads} heads, MLP {p.intermediate_size}"
    )
    print(f"Data      D = {p.tokens:,} tokens" + (f" = {p.epochs} epochs of {p.tokens_available:,} available" if p.epochs is not None else ""))
    print(
        f"Hardware  {p.num_gpus} x {p.gpu} at MFU {p.mfu}: " + (f"{d['wall_time_hours']} h" if p.wall_time_hours is not None else "wall time unknown")
    )
    print(
        f"Run       {p.precision}, ZeRO-{p.zero_stage}, micro-batch {p.micro_batch_size} x accum {p.grad_accum} "
        f"= {p.global_batch_sequences} sequences of {args.seq_len}, {p.max_steps:,} steps"
    )
    print("DeepSpeed config:\n" + json.dumps(ds, indent=2))
    return 0


def _sweep(args) -> int:
    load_config(args.config, args.overrides)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    from flows.env import configure

    configure()
    from flows.sweep import scaling_sweep

    result = scaling_sweep(config=args.config, sizes=sizes, tokens=args.tokens, overrides=args.overrides, fit_path=args.fit_path)
    print(f"L(N) = {result['E']:.4f} + {result['A']:.4g} * N^-{result['alpha']:.4f}  ->  {result['fit_path']} (MLflow run {result['run_id']})")
    return 0


def _schedule(args) -> int:
    cfg = load_config(args.config, args.overrides)  # fail now, not at 2 am
    from flows.env import configure

    configure()
    from flows.parameters import as_mapping
    from flows.pipeline import lifecycle_pipeline

    overrides = as_mapping(args.overrides, cfg.to_dict())  # the key/value form the deployment's schema takes
    lifecycle_pipeline.serve(name=args.name, cron=args.cron, parameters={"config": args.config, "overrides": overrides})
    return 0


def _run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    selected = _phases(args.phases)
    if args.dry_run:
        return _dry_run(cfg, selected, args.force)
    from flows.env import configure

    configure()  # fails in one line on a home that cannot be written, before the Prefect server or any MLflow run starts
    from flows.pipeline import lifecycle_pipeline

    result = lifecycle_pipeline(config=str(args.config), overrides=list(args.overrides), phases=selected, force=args.force)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _report(result)
    return 0


def _evaluate(args) -> int:
    load_config(args.config, args.overrides)  # a bad value fails here, before Prefect starts
    from flows.env import configure

    configure()
    from phases.inference.resolve import check

    check(args.model)  # a missing directory, registered model or alias fails here, before Prefect starts (no download)
    from flows.evaluate_model import evaluate_model

    result = evaluate_model(model=args.model, config=args.config, overrides=args.overrides, label=args.label)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    from phases.evaluate.suite import table_markdown

    print(table_markdown(result["rows"], [args.label]))
    print(f"MLflow run {result['run_id']}; suite {result['suite']}; files in {result['output']}")
    return 0


def _up(args) -> int:
    from flows import stack
    from flows.env import lifecycle_home

    r = stack.up(lifecycle_home(), args.prefect_port, args.mlflow_port)
    print(
        f"Prefect UI  {r['prefect_ui']}  (worker polling pool {r['pool']})\nMLflow UI   {r['mlflow_ui']}\n"
        f"Point runs at them:\n  export PREFECT_API_URL={r['prefect_api']}\n  export MLFLOW_TRACKING_URI={r['mlflow_ui']}\n"
        f"Stop them with: lifecycle down"
    )
    return 0


def _down(args) -> int:
    from flows import stack
    from flows.env import lifecycle_home

    stopped = stack.down(lifecycle_home())
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing to stop (no stack recorded under $LIFECYCLE_HOME/stack)")
    return 0


COMMANDS = {
    "run": _run,
    "schedule": _schedule,
    "sweep": _sweep,
    "dedup": dedup_command.run,
    "lineage": lineage_command.run,
    "deploy": deploy.run,
    "evaluate": _evaluate,
    "plan": _plan,
    "up": _up,
    "down": _down,
    **inference_commands.COMMANDS,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LifecycleError as e:
        print(f"lifecycle: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lifecycle: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
