"""Supervised subprocesses: long jobs (the DeepSpeed launcher) run under a watch.

The child gets its own process group (session), so everything it starts - the launcher's
per-rank workers included - can be signalled at once. Every output line goes to a
``logging.Logger`` (the task layer forwards the ``lifecycle`` namespace to Prefect, so the
run's progress shows up live in the UI) and to a log file next to the outputs. The group is
killed on timeout and when the parent is interrupted or cancelled; a non-zero exit becomes
a :class:`LaunchError` carrying the return code and the last lines of output.

Pure standard library, POSIX only (process groups).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from phases.errors import LaunchError

TAIL_LINES = 40
_EXCEPTION = re.compile(r"\b[A-Z]\w*(Error|Exception|Interrupt)\b:")


def run_supervised(
    cmd: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    timeout_s: float | None,
    logger: logging.Logger,
    log_path: str | Path,
    *,
    kill_grace_s: float = 10.0,
    tail_lines: int = TAIL_LINES,
) -> None:
    """Run ``cmd`` to completion; raise :class:`LaunchError` unless it exits 0 in time.

    ``kill_grace_s`` is how long the group gets between SIGTERM and SIGKILL: DeepSpeed's
    launcher forwards SIGTERM to its ranks, which then need a moment to exit.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    logger.info("starting: %s", " ".join(map(str, cmd)))
    with log_path.open("a", buffering=1, encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            orphan_guarded(list(map(str, cmd))),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one stream keeps tracebacks next to the lines before them
            start_new_session=True,
            text=True,
            errors="replace",
            bufsize=1,
        )
        # A thread drains the pipe so the main thread can wait with a deadline and receive
        # KeyboardInterrupt; a child blocked on a full pipe would otherwise look hung.
        reader = threading.Thread(target=_pump, args=(proc, logger, log_file, tail), daemon=True)
        reader.start()
        try:
            returncode = _wait(proc, timeout_s)
        except subprocess.TimeoutExpired:
            logger.error("timed out after %ss; killing process group %d", timeout_s, proc.pid)
            kill_group(proc, kill_grace_s)
            reader.join(timeout=5)
            raise LaunchError(
                f"{_name(cmd)} timed out after {timeout_s}s and was killed; raise the phase's timeout_s or shorten the run (log: {log_path})",
                returncode=proc.returncode,
                log_tail="\n".join(tail),
            ) from None
        except BaseException:
            # KeyboardInterrupt, task cancellation (Prefect raises into the worker thread),
            # anything else: never leave the ranks running without a supervisor.
            logger.warning("interrupted; killing process group %d", proc.pid)
            kill_group(proc, kill_grace_s)
            raise
        _reap_stragglers(proc, reader)
    if returncode != 0:
        raise LaunchError(
            f"{_name(cmd)} exited with code {returncode}: {_error_line(tail)} (log: {log_path})",
            returncode=returncode,
            log_tail="\n".join(tail),
        )
    logger.info("finished: %s (exit 0)", _name(cmd))


def orphan_guarded(cmd: list[str]) -> list[str]:
    """``cmd`` behind a guard that ends it when this process dies (a kill -9 of the orchestrator too).

    On Linux the guard (``python -m phases.process``) asks the kernel for SIGTERM when its parent
    dies (PR_SET_PDEATHSIG, kept across exec), then execs ``cmd`` in its place: the same pid and
    process group, no extra process. DeepSpeed's launcher forwards SIGTERM to its ranks. Elsewhere
    ``cmd`` runs as it is.
    """
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-m", "phases.process", str(os.getpid()), "--", *cmd]


def _exec_guarded(argv: list[str]) -> None:
    """The guard's main: ``<parent pid> -- cmd...``."""
    import ctypes

    parent, cmd = int(argv[0]), argv[2:]
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request: nothing would signal us
        sys.exit(f"phases.process: the supervising process {parent} is gone; not starting {cmd[:1]}")
    os.execvp(cmd[0], cmd)


def kill_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after ``grace_s``."""
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, else its zombie keeps the group "alive"
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _wait(proc: subprocess.Popen, timeout_s: float | None) -> int:
    """``proc.wait`` in short slices: a bare ``wait()`` blocks in one ``waitpid`` call, where
    an exception raised into this thread (Prefect's cancellation of a task running in a
    worker thread) would not be delivered until the child exits on its own."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        try:
            return proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            continue


def _pump(proc: subprocess.Popen, logger: logging.Logger, log_file, tail: collections.deque) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        log_file.write(line + "\n")
        tail.append(line)
        logger.info("%s", line)
    proc.stdout.close()


def _reap_stragglers(proc: subprocess.Popen, reader: threading.Thread) -> None:
    # The leader has exited, but a grandchild that inherited stdout keeps the pipe open and
    # the reader blocked. Give the output a moment to drain, then end the rest of the group.
    reader.join(timeout=5)
    if reader.is_alive() or _group_alive(proc.pid):
        kill_group(proc, grace_s=2.0)
        reader.join(timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _probe(send, target: int) -> bool:
    """Whether signal 0 sent with ``send`` (os.kill or os.killpg) finds ``target``, ours or not."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    return _probe(os.killpg, pgid)


def pid_alive(pid: int) -> bool:
    return _probe(os.kill, pid)


def _error_line(tail: collections.deque) -> str:
    """The line worth a one-line message: the last exception, else the last output."""
    lines = [line.strip() for line in tail if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION.search(line):
            return line
    return lines[-1] if lines else "no output"


def _name(cmd: Sequence[str]) -> str:
    """A short name for messages: the module after -m, else the program."""
    parts = list(map(str, cmd))
    if "-m" in parts and parts.index("-m") + 1 < len(parts):
        return parts[parts.index("-m") + 1]
    return Path(parts[0]).name if parts else "command"


if __name__ == "__main__":
    _exec_guarded(sys.argv[1:])
