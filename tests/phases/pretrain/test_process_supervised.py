"""run_supervised: streaming, failure reporting, killing the whole group on timeout or cancel."""

from __future__ import annotations

import _thread
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from phases.errors import LaunchError
from phases.process import run_supervised

LOGGER = logging.getLogger("lifecycle.test_process")

# A child that starts a grandchild (as the DeepSpeed launcher starts ranks), reports its
# pid, then waits forever; the grandchild ignores nothing and also sleeps.
SPAWNER = (
    "import subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('grandchild', g.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def _alive(pid: int) -> bool:
    """Running (not gone and not a zombie waiting for a reaper that may never come)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _grandchild_pid(log_path: Path) -> int:
    line = next(line for line in log_path.read_text().splitlines() if line.startswith("grandchild"))
    return int(line.split()[1])


def _wait_gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_streams_every_line_to_logger_and_file(tmp_path, caplog):
    code = "import sys\nfor i in range(3): print(f'line {i}', flush=True)\nprint('to stderr', file=sys.stderr)"
    with caplog.at_level(logging.INFO, logger=LOGGER.name):
        run_supervised([sys.executable, "-c", code], dict(os.environ), tmp_path, 30, LOGGER, tmp_path / "run.log")
    logged = [r.getMessage() for r in caplog.records if r.name == LOGGER.name]
    for expected in ("line 0", "line 1", "line 2", "to stderr"):
        assert expected in logged
    assert (tmp_path / "run.log").read_text().splitlines() == ["line 0", "line 1", "line 2", "to stderr"]


def test_nonzero_exit_raises_with_code_and_tail(tmp_path):
    code = "import sys\nfor i in range(100): print(f'line {i}')\nsys.exit(3)"
    with pytest.raises(LaunchError) as err:
        run_supervised([sys.executable, "-c", code], None, tmp_path, 30, LOGGER, tmp_path / "run.log", tail_lines=40)
    assert err.value.returncode == 3
    tail = err.value.log_tail.splitlines()
    assert len(tail) == 40 and tail[0] == "line 60" and tail[-1] == "line 99"
    assert "code 3" in str(err.value) and "line 99" in str(err.value)  # no exception: the last line


def test_failure_message_names_the_exception(tmp_path):
    code = "print('working')\nraise ValueError('bad shard 7')"
    with pytest.raises(LaunchError, match="ValueError: bad shard 7") as err:
        run_supervised([sys.executable, "-c", code], None, tmp_path, 30, LOGGER, tmp_path / "run.log")
    assert err.value.returncode == 1 and "Traceback" in err.value.log_tail
    assert "\n" not in str(err.value)


def test_timeout_kills_the_whole_process_group(tmp_path):
    start = time.monotonic()
    with pytest.raises(LaunchError, match="timed out") as err:
        run_supervised([sys.executable, "-c", SPAWNER], None, tmp_path, 2, LOGGER, tmp_path / "run.log", kill_grace_s=2)
    assert time.monotonic() - start < 15
    assert err.value.returncode is not None and err.value.returncode < 0  # died of a signal
    assert _wait_gone(_grandchild_pid(tmp_path / "run.log")), "grandchild survived the timeout"


def test_sigkill_when_sigterm_is_ignored(tmp_path):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(120)"
    start = time.monotonic()
    with pytest.raises(LaunchError) as err:
        run_supervised([sys.executable, "-c", code], None, tmp_path, 2, LOGGER, tmp_path / "run.log", kill_grace_s=1)
    assert err.value.returncode == -9
    assert time.monotonic() - start < 10


def test_interrupt_in_parent_kills_the_group(tmp_path):
    # KeyboardInterrupt arrives in the main thread while it waits, as a cancel would.
    timer = threading.Timer(2.0, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_supervised([sys.executable, "-c", SPAWNER], None, tmp_path, None, LOGGER, tmp_path / "run.log", kill_grace_s=2)
    finally:
        timer.cancel()
    assert _wait_gone(_grandchild_pid(tmp_path / "run.log")), "grandchild survived the cancel"


# A launcher that ends its group on SIGTERM, as DeepSpeed's runner forwards SIGTERM to its ranks.
FORWARDER = (
    "import os, signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('child', os.getpid(), flush=True)\n"
    "print('grandchild', g.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_kill_9_of_the_supervisor_ends_the_job(tmp_path):
    """The orchestrator itself killed with SIGKILL (no handler runs): the kernel's parent-death signal
    reaches the supervised child, which ends its group; no rank is left training alone."""
    import signal
    import subprocess

    log = tmp_path / "run.log"
    code = (
        "import logging, sys\nfrom phases.process import run_supervised\n"
        f"run_supervised([sys.executable, '-c', {FORWARDER!r}], None, {str(tmp_path)!r}, None, logging.getLogger('t'), {str(log)!r})\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[3])
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and "grandchild" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(next(line for line in log.read_text().splitlines() if line.startswith("child")).split()[1])
        grandchild = _grandchild_pid(log)
        assert _alive(child) and _alive(grandchild)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(10)
        assert _wait_gone(child) and _wait_gone(grandchild), "the job outlived its supervisor"
    finally:
        supervisor.kill()
