import pytest

from phases.config import PHASE_NAMES, LifecycleConfig, apply_override, flatten, load_config
from phases.errors import ConfigError


def test_tiny_preset_has_every_section():
    cfg = load_config("tiny")
    assert isinstance(cfg, LifecycleConfig)
    assert all(hasattr(cfg, p) for p in PHASE_NAMES)
    assert [s.name for s in cfg.data.sources] == ["code", "docs", "licenses"]


def test_override_typed_and_hash_changes():
    base = load_config("tiny")
    cfg = load_config("tiny", ["pretrain.max_steps=20", "inference.temperature=0.5", "data.sources.0.weight=2"])
    assert cfg.pretrain.max_steps == 20 and cfg.inference.temperature == 0.5 and cfg.data.sources[0].weight == 2
    assert cfg.digest() != base.digest()
    assert load_config("tiny").digest() == base.digest()


def test_config_is_frozen():
    cfg = load_config("tiny")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        cfg.pretrain.lr = 1.0


@pytest.mark.parametrize(
    "override, needle",
    [
        ("pretrain.lr=-1", "pretrain.lr=-1"),
        ("pretrain.zero_stage=5", "pretrain.zero_stage=5"),
        ("pretrain.lrr=0.1", "pretrain.lrr is not a known setting"),
        ("model.seq_len=4096", "exceeds max_position_embeddings"),
        ("model.num_heads=3", "divisible by num_heads"),
        ("data.sources.7.weight=1", "indexes a list of 3 items"),
        ("nonsense", "must look like section.key=value"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="presets: .*tiny"):
        load_config("no-such-preset")


def test_preset_with_base(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: tiny\nname: mine\npretrain: {max_steps: 70}\n")
    cfg = load_config(f)
    assert cfg.name == "mine" and cfg.pretrain.max_steps == 70 and cfg.model.vocab_size == load_config("tiny").model.vocab_size


def test_source_file_kinds_need_a_path():
    with pytest.raises(ConfigError, match="needs a path"):
        load_config("tiny", ["data.sources.0.kind=jsonl"])


def test_apply_override_and_flatten():
    raw = {"a": {"b": [{"c": 1}]}}
    apply_override(raw, "a.b.0.c=[1, 2]")
    assert raw["a"]["b"][0]["c"] == [1, 2]
    assert flatten({"x": {"y": 1, "z": [{"w": 2}]}}) == {"x.y": 1, "x.z.0.w": 2}
