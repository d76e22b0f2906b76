import json

import pytest

from phases.refs import PhaseRef
from phases.storage import MANIFEST, dir_digest, is_complete, materialize, output_dir, phase_key


def test_key_depends_on_every_part():
    base = phase_key("model", 1, {"a": 1}, {"data": "f1"})
    assert base == phase_key("model", 1, {"a": 1}, {"data": "f1"})
    assert len({base, phase_key("model", 2, {"a": 1}, {"data": "f1"}), phase_key("model", 1, {"a": 2}, {"data": "f1"}),
                phase_key("model", 1, {"a": 1}, {"data": "f2"}), phase_key("data", 1, {"a": 1}, {"data": "f1"})}) == 5


def test_materialize_publishes_then_reuses(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        (out / "x.txt").write_text("hello")
        return {"n": 1}

    inputs = {"data": PhaseRef("data", "k", "/d", "fp")}
    ref, reused = materialize(home=tmp_path, phase="model", version=1, section={"a": 1}, inputs=inputs, build=build)
    assert not reused and ref.summary == {"n": 1}
    assert is_complete(ref.path) and (ref.path / "x.txt").read_text() == "hello"
    manifest = json.loads((ref.path / MANIFEST).read_text())
    assert manifest["inputs"]["data"]["fingerprint"] == "fp" and manifest["fingerprint"] == ref.fingerprint
    assert ref.fingerprint == dir_digest(ref.path)[0]
    ref2, reused2 = materialize(home=tmp_path, phase="model", version=1, section={"a": 1}, inputs=inputs, build=build)
    assert reused2 and ref2 == ref and len(calls) == 1


def test_failed_build_leaves_nothing(tmp_path):
    def build(out):
        (out / "partial").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        materialize(home=tmp_path, phase="p", version=1, section={}, inputs={}, build=build)
    assert list((tmp_path / "outputs" / "p").iterdir()) == []


def test_unfinished_leftover_is_rebuilt(tmp_path):
    key = phase_key("p", 1, {}, {})
    leftover = output_dir(tmp_path, "p", key)
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("from a killed run")

    ref, reused = materialize(home=tmp_path, phase="p", version=1, section={}, inputs={}, build=lambda out: (out / "ok").write_text("1") and {})
    assert not reused and not (ref.path / "junk").exists() and (ref.path / "ok").exists()


def test_published_files_are_readable_by_all(tmp_path):
    def build(out):
        f = out / "weights.safetensors"
        f.write_text("w")
        f.chmod(0o600)
        return {}

    ref, _ = materialize(home=tmp_path, phase="p", version=1, section={}, inputs={}, build=build)
    assert (ref.path / "weights.safetensors").stat().st_mode & 0o044 == 0o044


def test_a_build_may_vouch_for_its_content(tmp_path):
    from phases.storage import CONTENT_FINGERPRINT

    ref, _ = materialize(home=tmp_path, phase="p", version=1, section={}, inputs={},
                         build=lambda out: (out / "f").write_text("x") and {"n": 1, CONTENT_FINGERPRINT: "rows-digest"})
    assert ref.fingerprint == "rows-digest" and ref.summary == {"n": 1}
