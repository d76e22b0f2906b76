"""Bad configuration, whole schema: every field of LifecycleConfig, recursively, gets a value of
the wrong type and (where the schema can tell) an invalid one, through the same dotted overrides
as ``lifecycle run --set``; each must fail with one ConfigError line naming the key.

A new field needs either a constraint this walk can see (bounds, lengths, a pattern, a Literal,
a float, a validator exercised in ``INVALID``) or an entry in ``FREE`` saying why any value of
its type is acceptable at load time.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass

import annotated_types as at
import pytest
from pydantic import BaseModel

from flows.cli import main
from phases.config import LifecycleConfig, load_config
from phases.errors import ConfigError

# Values only a validator (or a dependency) can judge: the schema's metadata does not show them.
INVALID = {
    "data.spark_master": ["garbage://x", "local[0]", "spark://host", "localhost"],
    "data.spark_driver_memory": ["lots", "2 GB", "0", "-1g"],
    "model.size": ["no-such-size"],
    "model.gpu": ["no-such-gpu"],
    "data.sources.0.kind": ["jsonl"],  # a file kind without a path
    "inference.prompts": ["['  ']"],
    "inference.stop": ["['']"],
}
# Fields where any value of the right type passes at load time, and why.
FREE = {
    "name": "a label recorded in lineage",
    "data.sources.0.path": "a file, glob or URI; checked (with the source named) when the data phase lists it",
    "data.sources.0.text_field": "a column name of the user's data",
    "data.sources.0.id_field": "a column name of the user's data",
    "data.sources.0.license": "free-text tag",
    "data.sources.0.quality_filters": "bool",
    "data.near_dedup.enabled": "bool",
    "data.near_dedup.seed": "any integer seeds MinHash",
    "data.redact_pii": "bool",
    "data.dedup_index": "bool",
    "data.seed": "any integer",
    "model.tokenizer_path": "a directory; checked when the model phase loads it",
    "model.special_tokens": "any strings",
    "model.loss_law": "JSON text; parsed when a budget is sized with it",
    "pretrain.hostfile": "a path; DeepSpeed reads it (num_nodes > 1 requires it)",
    "pretrain.seed": "any integer",
    "pretrain.activation_checkpointing": "bool",
    "pretrain.compile": "bool",
    "align.sft_data": "a JSONL path; checked when the align phase reads it",
    "align.preference_data": "a JSONL path; checked when the align phase reads it",
    "align.seed": "any integer",
    "align.reward_model": "bool",
    "align.lora": "bool",
    "inference.prompts_file": "a JSONL path; checked when the inference phase reads it",
    "inference.chat": "bool",
    "inference.greedy": "bool",
    "inference.quantize": "bool",
    "evaluate.task_dirs": "folders of task YAMLs; lm-eval checks them before any model loads",
    "evaluate.canaries": "any strings",
    "evaluate.baselines": "bool",
    "evaluate.promote": "bool",
    "evaluate.seed": "any integer",
}


@dataclass(frozen=True)
class Leaf:
    path: str
    base: typing.Any  # the annotation without None
    metadata: tuple


def _unwrap(ann):
    args = typing.get_args(ann)
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else ann
    return ann


def _section(ann) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def walk(model: type[BaseModel] = LifecycleConfig, prefix: str = "") -> list[Leaf]:
    leaves = []
    for name, field in model.model_fields.items():
        path, base = f"{prefix}{name}", _unwrap(field.annotation)
        if _section(base):
            leaves.append(Leaf(path, base, ()))
            leaves += walk(base, path + ".")
        elif typing.get_origin(base) is tuple and _section(typing.get_args(base)[0]):
            leaves.append(Leaf(path, base, tuple(field.metadata)))
            leaves += walk(typing.get_args(base)[0], path + ".0.")  # the preset's first item
        else:
            leaves.append(Leaf(path, base, tuple(field.metadata)))
    return leaves


def _yaml(v) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def wrong_types(leaf: Leaf) -> list[str]:
    """Override texts (YAML) of a type the field does not take."""
    b = leaf.base
    if _section(b) or typing.get_origin(b) is tuple:
        return ["5"]
    if b is bool:
        return ["maybe"]
    if b is int:
        return ["abc", "1.5"]
    if b is float:
        return ["abc"]
    return ["{a: 1}", "[1, 2]"]  # str and Literal fields


def invalid_values(leaf: Leaf) -> list[str]:
    """Override texts of the right type outside what the field allows."""
    out = list(INVALID.get(leaf.path, ()))
    b = leaf.base
    if b is float:
        out += [".nan", ".inf", "-.inf"]
    if typing.get_origin(b) is typing.Literal:
        out.append("not-a-choice")
    for m in leaf.metadata:
        step = 1 if b is int else 0.5
        if isinstance(m, at.Ge):
            out.append(str(m.ge - step))
        elif isinstance(m, at.Gt):
            out.append(str(m.gt))
        elif isinstance(m, at.Le):
            out.append(str(m.le + step))
        elif isinstance(m, at.Lt):
            out.append(str(m.lt))
        elif isinstance(m, at.MinLen) and m.min_length >= 1:
            out.append("''" if b is str else "[]")
        elif isinstance(m, at.MaxLen):
            out.append("[" + ", ".join(["x"] * (m.max_length + 1)) + "]")
        elif getattr(m, "pattern", None):
            out.append("'has space!'")
    return out


LEAVES = walk()
CASES = [(leaf.path, v, "type") for leaf in LEAVES for v in wrong_types(leaf)] + [
    (leaf.path, v, "value") for leaf in LEAVES for v in invalid_values(leaf)
]


def _names_key(message: str, path: str) -> bool:
    """The dotted key, or (for a section's cross-field check) its section and the field's name."""
    parent, _, name = path.rpartition(".")
    return path in message or (parent in message and name in message)


def test_every_field_is_walked_and_classified():
    paths = {leaf.path for leaf in LEAVES}
    assert {"data.spark_master", "data.sources.0.weight", "data.near_dedup.threshold", "pretrain.lr", "evaluate.margin"} <= paths
    unchecked = sorted(leaf.path for leaf in LEAVES if not invalid_values(leaf) and leaf.path not in FREE and not _section(leaf.base))
    assert unchecked == [], f"fields with no invalid value to try: constrain them, add a case to INVALID, or say why in FREE: {unchecked}"
    stale = sorted(set(FREE) - paths) + sorted(set(INVALID) - paths)
    assert stale == [], f"entries for fields that no longer exist: {stale}"
    assert len(CASES) > 250


@pytest.mark.parametrize("path, value, kind", CASES, ids=[f"{p}={v}" for p, v, _ in CASES])
def test_bad_value_fails_with_one_line_naming_the_key(path, value, kind):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [f"{path}={value}"])
    message = str(e.value)
    assert "\n" not in message
    assert _names_key(message, path), message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan"])
def test_non_finite_floats_say_so(value):
    with pytest.raises(ConfigError, match=r"pretrain\.lr=.* is invalid: Input should be a finite number"):
        load_config("tiny", [f"pretrain.lr={value}"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.spark_master=garbage://x", "not a Spark master URL"),
        ("data.spark_driver_memory=lots", "not a JVM memory size"),
    ],
)
def test_dependency_values_fail_before_any_jvm(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("tiny", [override])


@pytest.mark.parametrize(
    "override",
    [
        "data.spark_master=local",
        "data.spark_master=local[1]",
        "data.spark_master=local[*]",
        "data.spark_master=local[4,2]",
        "data.spark_master=local[*,3]",
        "data.spark_master=local-cluster[2,1,1024]",
        "data.spark_master=spark://head:7077",
        "data.spark_master=spark://m1:7077,m2:7077",
        "data.spark_master=yarn",
        "data.spark_master=k8s://https://10.0.0.1:6443",
        "data.spark_master=mesos://zk://zk1:2181/mesos",
        "data.spark_driver_memory=512m",
        "data.spark_driver_memory=2g",
        "data.spark_driver_memory=4G",
        "data.spark_driver_memory=1024",
        "data.spark_driver_memory=8gb",
        "pretrain.lr=1e-4",
        "evaluate.margin=0.01",
    ],
)
def test_good_values_still_pass(override):
    load_config("tiny", [override])


def test_cli_prints_one_error_line(capsys):
    assert main(["run", "--set", "data.spark_master=garbage://x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lifecycle: error: data.spark_master='garbage://x' is invalid: not a Spark master URL")
