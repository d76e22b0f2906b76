"""Training progress as a Prefect progress artifact, read from the phase's own log lines.

Pretraining (a DeepSpeed subprocess whose output is relayed to ``lifecycle.pretrain``) and the
align trainers (``lifecycle.align``) log ``step N/M`` lines. A handler on the phase's logger keeps
the latest one; a thread started with the task's context (so it talks to the task's Prefect
server) updates the artifact ``<phase>-progress`` every few seconds, and sets 100% when the
phase finishes. The phases know nothing of Prefect.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
from contextlib import contextmanager
from typing import Iterator

STEP = re.compile(r"\bstep (\d+)/(\d+)\b")
EVERY_S = 5.0


class _Latest(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.latest: tuple[int, int, str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        m = STEP.search(message)
        if m and int(m[2]) > 0:
            self.latest = (int(m[1]), int(m[2]), message[m.start() : m.start() + 120])


@contextmanager
def progress_artifact(phase: str) -> Iterator[None]:
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    handler = _Latest()
    logger = logging.getLogger(f"lifecycle.{phase}")
    artifact = create_progress_artifact(0.0, key=f"{phase}-progress", description=f"{phase}: waiting for the first step")
    stop = threading.Event()

    def loop() -> None:
        shown = None
        while not stop.wait(EVERY_S):
            latest = handler.latest
            if latest and latest != shown:
                step, total, line = latest
                try:
                    update_progress_artifact(artifact, min(100.0, 100.0 * step / total), description=f"{phase}: {line}")
                except Exception as e:  # progress is a courtesy: never fail training over it
                    logging.getLogger("lifecycle.progress").debug("progress update failed: %s", e)
                shown = latest

    thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,), name=f"{phase}-progress", daemon=True)
    logger.addHandler(handler)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join(timeout=10)
        logger.removeHandler(handler)
        latest = handler.latest
        if ok:
            update_progress_artifact(artifact, 100.0, description=f"{phase}: done" + (f" ({latest[2]})" if latest else ""))
        elif latest:
            update_progress_artifact(artifact, 100.0 * latest[0] / latest[1], description=f"{phase}: failed after {latest[2]}")
