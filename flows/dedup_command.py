"""``lifecycle dedup``: near-deduplicate JSONL/Parquet records outside the pipeline.

Its parameter flags are derived from :class:`~phases.config.NearDedupConfig` (names, types,
defaults, help), so the command and the pipeline's ``data.near_dedup`` section cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import typing

from phases.config import NearDedupConfig
from phases.errors import LifecycleError

PIPELINE_ONLY = ("enabled",)  # a standalone run always deduplicates


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(parser, name: str, field) -> None:
    kind = field.annotation
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is typing.Literal:
        parser.add_argument(_flag(name), choices=args, default=field.default, help=f"{field.description} (default: {field.default})")
        return
    base = args[0] if args else kind  # int | None -> int
    parser.add_argument(_flag(name), type=base, default=field.default, metavar=name.upper(), help=f"{field.description} (default: {field.default})")


def add_parser(subparsers) -> argparse.ArgumentParser:
    dd = subparsers.add_parser("dedup", help="near-deduplicate JSONL/Parquet records (id, text) outside the pipeline")
    dd.add_argument("--input", nargs="+", required=True, metavar="PATH", help="JSONL or Parquet files or directories")
    dd.add_argument("--output", required=True, metavar="DIR", help="writes DIR/kept/, DIR/clusters.parquet, DIR/stats.json")
    for name, field in NearDedupConfig.model_fields.items():
        if name not in PIPELINE_ONLY:
            _add_field(dd, name, field)
    dd.add_argument("--index", metavar="DIR", help="incremental: deduplicate against this index of earlier batches, then add to it")
    dd.add_argument("--spark-master", default="local[*]", help="Spark master URL (default: local[*])")
    return dd


def params_from(args) -> NearDedupConfig:
    """The NearDedupConfig of the parsed flags; a bad value names its flag and what is allowed."""
    from pydantic import ValidationError

    values = {name: getattr(args, name) for name in NearDedupConfig.model_fields if name not in PIPELINE_ONLY}
    try:
        return NearDedupConfig(**values)
    except ValidationError as e:
        err = e.errors()[0]
        where = _flag(str(err["loc"][0])) if err["loc"] else "flags"
        got = f", got {err['input']!r}" if err["loc"] else ""
        raise LifecycleError(f"dedup: {where}: {err['msg']}{got}") from None


def run(args) -> int:
    from phases.data.dedup.command import run_dedup

    params = params_from(args)
    try:
        stats = run_dedup(args.input, args.output, params, spark_master=args.spark_master, index_dir=args.index)
    except ValueError as e:  # an index built with other parameters names them
        raise LifecycleError(f"dedup: {e}") from None
    print(json.dumps(stats, indent=2, default=str))
    return 0
