import json

import pytest

from phases.refs import PhaseRef
from phases.storage import MANIFEST, dir_digest, is_complete, materialize, output_dir, phase_key

KEY = phase_key("model", 1, {"a": 1}, {"data": "fp"})


def manifest_of(inputs):
    return {"inputs": {n: {"uri": r.uri, "fingerprint": r.fingerprint, "key": r.key} for n, r in inputs.items()}}


def test_key_depends_on_every_part():
    base = phase_key("model", 1, {"a": 1}, {"data": "f1"})
    assert base == phase_key("model", 1, {"a": 1}, {"data": "f1"})
    assert (
        len(
            {
                base,
                phase_key("model", 2, {"a": 1}, {"data": "f1"}),
                phase_key("model", 1, {"a": 2}, {"data": "f1"}),
                phase_key("model", 1, {"a": 1}, {"data": "f2"}),
                phase_key("data", 1, {"a": 1}, {"data": "f1"}),
            }
        )
        == 5
    )


def test_materialize_publishes_then_reuses(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        (out / "x.txt").write_text("hello")
        return {"n": 1}

    inputs = {"data": PhaseRef("data", "k", "/d", "fp")}
    ref, reused = materialize(home=tmp_path, phase="model", key=KEY, build=build, manifest=manifest_of(inputs))
    assert not reused and ref.summary == {"n": 1}
    assert is_complete(ref.path) and (ref.path / "x.txt").read_text() == "hello"
    manifest = json.loads((ref.path / MANIFEST).read_text())
    assert manifest["inputs"]["data"]["fingerprint"] == "fp" and manifest["fingerprint"] == ref.fingerprint
    assert ref.fingerprint == dir_digest(ref.path)[0]
    ref2, reused2 = materialize(home=tmp_path, phase="model", key=KEY, build=build, manifest=manifest_of(inputs))
    assert reused2 and ref2 == ref and len(calls) == 1


def test_failed_build_leaves_nothing(tmp_path):
    def build(out):
        (out / "partial").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        materialize(home=tmp_path, phase="p", key=phase_key("p", 1, {}, {}), build=build)
    assert list((tmp_path / "outputs" / "p").iterdir()) == []  # no staging left, and the lock lives elsewhere


def test_unfinished_leftover_is_rebuilt(tmp_path):
    key = phase_key("p", 1, {}, {})
    leftover = output_dir(tmp_path, "p", key)
    leftover.mkdir(parents=True)
    (leftover / "junk").write_text("from a killed run")

    ref, reused = materialize(home=tmp_path, phase="p", key=phase_key("p", 1, {}, {}), build=lambda out: (out / "ok").write_text("1") and {})
    assert not reused and not (ref.path / "junk").exists() and (ref.path / "ok").exists()


def test_published_files_are_readable_by_all(tmp_path):
    def build(out):
        f = out / "weights.safetensors"
        f.write_text("w")
        f.chmod(0o600)
        return {}

    ref, _ = materialize(home=tmp_path, phase="p", key=phase_key("p", 1, {}, {}), build=build)
    assert (ref.path / "weights.safetensors").stat().st_mode & 0o044 == 0o044


def test_a_build_may_vouch_for_its_content(tmp_path):
    from phases.storage import CONTENT_FINGERPRINT

    ref, _ = materialize(
        home=tmp_path,
        phase="p",
        key=phase_key("p", 1, {}, {}),
        build=lambda out: (out / "f").write_text("x") and {"n": 1, CONTENT_FINGERPRINT: "rows-digest"},
    )
    assert ref.fingerprint == "rows-digest" and ref.summary == {"n": 1}


def test_records_stay_out_of_the_fingerprint(tmp_path):
    """Two builds of one key with identical weights but different logs and timings: one fingerprint."""

    def build_with(log_text, weights):
        def build(out):
            (out / "model.safetensors").write_text(weights)
            (out / "train.log").write_text(log_text)
            (out / "summary.json").write_text(log_text)
            return {}

        return build

    records = ("*.log", "summary.json")
    key = phase_key("p", 1, {}, {})
    a, _ = materialize(home=tmp_path / "a", phase="p", key=key, build=build_with("run 1 took 3.2 s", "w"), records=records)
    b, _ = materialize(home=tmp_path / "b", phase="p", key=key, build=build_with("run 2 took 4.1 s", "w"), records=records)
    c, _ = materialize(home=tmp_path / "c", phase="p", key=key, build=build_with("run 1 took 3.2 s", "other weights"), records=records)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert set(json.loads((a.path / MANIFEST).read_text())["files"]) == {"model.safetensors", "train.log", "summary.json"}


def test_reuse_only_never_builds(tmp_path):
    from phases.errors import NotReadyError

    with pytest.raises(NotReadyError, match="add it to --phases"):
        materialize(home=tmp_path, phase="p", key="k1", build=lambda out: pytest.fail("built"), reuse_only=True)


def test_two_runs_of_one_key_build_it_once(tmp_path):
    """The second run waits on the output's lock, then reuses what the first published."""
    import threading
    import time

    calls, results = [], []

    def build(out):
        calls.append(out)
        time.sleep(0.5)  # the other run arrives while this one builds
        (out / "x").write_text("1")
        return {}

    def run():
        results.append(materialize(home=tmp_path, phase="p", key="k1", build=build))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(reused for _, reused in results) == [False, True]
    assert results[0][0] == results[1][0]
