"""A phase's `step N/M` log lines become a Prefect progress artifact (real flow, real server)."""

import logging
import time

from tasks import progress


def test_step_lines_move_a_progress_artifact(tmp_path, monkeypatch, caplog):
    from prefect import flow, get_client, task

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(progress, "EVERY_S", 0.05)
    caplog.set_level(logging.INFO, logger="lifecycle")  # as flows/env.py sets it for a run
    seen: list[float] = []

    @task
    def train():
        log = logging.getLogger("lifecycle.toyphase")
        with progress.progress_artifact("toyphase"):
            for step in range(1, 5):
                log.info("toyphase step %d/4 loss=1.0", step)
                time.sleep(0.3)
                with get_client(sync_client=True) as client:
                    art = client.read_latest_artifacts()  # the latest version of each key
                    seen.extend(a.data for a in art if a.key == "toyphase-progress")

    @flow
    def pipeline():
        train()
        with get_client(sync_client=True) as client:
            return [a for a in client.read_latest_artifacts() if a.key == "toyphase-progress"]

    final = pipeline()
    assert len(final) == 1 and final[0].type == "progress" and final[0].data == 100.0
    assert "done (step 4/4" in final[0].description
    assert any(0 < v < 100 for v in seen), seen  # it moved while training ran
