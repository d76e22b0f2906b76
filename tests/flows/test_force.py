"""``force``: a finished output is built again and published over the old one; a failed rebuild leaves
the old output whole. Exercised with the real phases.storage.materialize and a toy build."""

from __future__ import annotations

import pytest

from flows.cli import main
from flows.pipeline import rebuilding
from phases.storage import MANIFEST, is_complete, materialize, output_dir, read_manifest


def _build(text: str):
    def build(out):
        (out / "x.txt").write_text(text)
        return {"text": text}

    return build


def _boom(out):
    (out / "x.txt").write_text("half")
    raise RuntimeError("the rebuild failed")


def test_force_rebuilds_a_finished_output(tmp_path):
    final = output_dir(tmp_path, "toy", "k")
    assert materialize(home=tmp_path, phase="toy", key="k", build=_build("one"))[1] is False
    assert materialize(home=tmp_path, phase="toy", key="k", build=_build("two"))[1] is True  # no force: reused

    with rebuilding(tmp_path, "toy", "k"):
        ref, reused = materialize(home=tmp_path, phase="toy", key="k", build=_build("two"))
    assert not reused and ref.summary["text"] == "two" and (final / "x.txt").read_text() == "two"
    assert sorted(p.name for p in final.iterdir()) == [MANIFEST, "x.txt"], "the set-aside manifest went with the old output"
    assert read_manifest(final)["files"].keys() == {"x.txt"}


def test_a_failed_rebuild_keeps_the_old_output(tmp_path):
    final = output_dir(tmp_path, "toy", "k")
    materialize(home=tmp_path, phase="toy", key="k", build=_build("one"))
    before = read_manifest(final)
    with pytest.raises(RuntimeError, match="rebuild failed"), rebuilding(tmp_path, "toy", "k"):
        assert not is_complete(final)  # while it is rebuilt, the output is not done
        materialize(home=tmp_path, phase="toy", key="k", build=_boom)
    assert is_complete(final) and read_manifest(final) == before and (final / "x.txt").read_text() == "one"
    assert not list(final.glob(".*")) and not list(final.parent.glob(".k.staging-*"))
    assert materialize(home=tmp_path, phase="toy", key="k", build=_boom)[1] is True  # reused again, as before


def test_force_of_an_output_never_built_just_builds(tmp_path):
    with rebuilding(tmp_path, "toy", "new"):
        assert materialize(home=tmp_path, phase="toy", key="new", build=_build("one"))[1] is False


def test_dry_run_shows_what_force_rebuilds(tmp_path, monkeypatch, capsys):
    from phases.config import load_config
    from phases.registry import BY_NAME, sources_ref

    monkeypatch.setenv("LIFECYCLE_HOME", str(tmp_path))
    cfg = load_config("tiny")
    key = BY_NAME["data"].key(cfg.data, {"sources": sources_ref(cfg)})
    materialize(home=tmp_path, phase="data", key=key, build=_build("a finished data output"))
    assert main(["run", "--dry-run", "--phases", "data", "--force"]) == 0
    assert f"data       rebuild  key={key}" in capsys.readouterr().out
    assert main(["run", "--dry-run", "--phases", "data"]) == 0
    assert f"data       reuse    key={key}" in capsys.readouterr().out
