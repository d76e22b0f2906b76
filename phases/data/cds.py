"""Class data sharing for the Spark driver JVM: Spark's classes parsed once per machine, not per start.

A driver JVM loads some ten thousand classes before its first job. The first start on a machine
records the classes it loaded into an archive when the JVM exits (``-XX:ArchiveClassesAtExit``);
later starts map that archive (``-XX:SharedArchiveFile``). Measured on a 2-core machine: session
start 8.0-8.8 s -> 4.9-5.2 s, and the first job 3.6-3.9 s -> 1.9-2.4 s. The recording start is
slower (14 s), once.

- The archive is keyed by the pyspark install and the java binary: another Spark or JDK gets its
  own. A stale or damaged archive is only a lost speed-up: the JVM validates it and, with
  ``-Xshare:auto`` (the default), starts without it.
- One recorder at a time: while a live process records, other starts neither record nor share.
  A recorder claims the recording (a ``.jvm`` note beside it, written before its JVM starts: the
  archive itself appears only as that JVM exits). The recording is adopted under the final name
  by a later start, once both the Python process and its JVM have ended.
- Each start that shares an archive refreshes its modification time; archives of other Spark or
  JDK installs (e.g. the virtual environment of an old clone) unused for :data:`UNUSED_DAYS` are
  removed, so the cache does not grow by ~190 MB per install for ever.
- A conf directory on the class path (see :func:`classpath_directories`) turns it off: the JVM
  cannot archive for such a class path.
- ``LIFECYCLE_SPARK_CDS=0`` turns it off; ``LIFECYCLE_CACHE`` (default ``~/.cache/llm-lifecycle``)
  says where archives live.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from phases.process import pid_alive

# A recording whose JVM is unknown (its start failed before it was noted) is left this long after its
# last write before it is adopted or removed.
SETTLE_SECONDS = 20.0
# The JVM logs a warning per class it cannot archive (old bytecode versions in some jars): not wanted.
QUIET = "-Xlog:cds*=off"
# Archives of other keys unused for this long are removed when a start looks for its own.
UNUSED_DAYS = 14


def cache_dir() -> Path:
    return Path(os.environ.get("LIFECYCLE_CACHE") or Path.home() / ".cache" / "llm-lifecycle").expanduser()


def _java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return os.path.realpath(java) if java else ""


def classpath_directories() -> list[str]:
    """Non-empty directories that Spark's launcher puts on the driver's class path: its conf directory
    (``SPARK_CONF_DIR``, else ``$SPARK_HOME/conf``), ``HADOOP_CONF_DIR`` and ``YARN_CONF_DIR``.

    The JVM neither records nor maps an archive for a class path holding a non-empty directory
    ("Cannot have non-empty directory in paths"). Each start would then try to record and fail at exit,
    and a recording start is slower than a plain one. Measured with an empty spark-defaults.conf in a
    SPARK_CONF_DIR: 23.0-24.6 s against ~12 s. So sharing is off while one is there."""
    home = os.environ.get("SPARK_HOME")
    if not home:
        import pyspark

        home = os.path.dirname(os.path.realpath(pyspark.__file__))
    dirs = [os.environ.get("SPARK_CONF_DIR") or os.path.join(home, "conf"),
            os.environ.get("HADOOP_CONF_DIR"), os.environ.get("YARN_CONF_DIR")]
    found = []
    for d in dirs:
        try:
            if d and os.path.isdir(d) and any(os.scandir(d)):
                found.append(d)
        except OSError:
            continue
    return found


def archive_key() -> str:
    """Identifies the Spark classes and the JVM an archive was recorded with."""
    import pyspark

    java = _java_binary()
    java_mtime = os.path.getmtime(java) if java and os.path.exists(java) else 0
    ident = repr((pyspark.__version__, os.path.realpath(pyspark.__file__), java, java_mtime, os.environ.get("SPARK_HOME", "")))
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _recordings(directory: Path, final: Path) -> dict[int, tuple[Path, Path]]:
    """recorder pid -> (its archive-to-be, its JVM note), for every recording of ``final`` found (either file)."""
    found: dict[int, tuple[Path, Path]] = {}
    for path in directory.glob(final.name + ".*.tmp*"):
        middle = path.name[len(final.name) + 1:]
        pid_text, _, rest = middle.partition(".")
        if rest not in ("tmp", "tmp.jvm") or not pid_text.isdigit():
            continue
        tmp = directory / f"{final.name}.{pid_text}.tmp"
        found[int(pid_text)] = (tmp, tmp.with_name(tmp.name + ".jvm"))
    return found


def _prune(directory: Path, final: Path, now: float) -> None:
    """Removes archives of other keys unused for :data:`UNUSED_DAYS` (and their settled leftovers)."""
    for path in directory.glob("spark-cds-*"):
        if path.name.startswith(final.name):
            continue
        try:
            if now - path.stat().st_mtime > UNUSED_DAYS * 86400:
                path.unlink()
        except OSError:
            continue


def driver_java_options(directory: Path | None = None, now: float | None = None) -> str:
    """The ``spark.driver.defaultJavaOptions`` that share or record the archive ("" when off or busy).

    Choosing to record claims the recording for this process (see the module docstring)."""
    if os.environ.get("LIFECYCLE_SPARK_CDS", "1") == "0" or not _java_binary() or classpath_directories():
        return ""
    try:
        directory = cache_dir() if directory is None else directory
        final = directory / f"spark-cds-{archive_key()}.jsa"
    except (RuntimeError, OSError):  # no home directory, no readable java: start without sharing
        return ""
    if any(ch.isspace() for ch in str(final)):  # Spark splits Java options on whitespace
        return ""
    now = time.time() if now is None else now
    recording = False
    for pid, (tmp, jvm_note) in sorted(_recordings(directory, final).items()):
        try:
            note = jvm_note.read_text().strip() if jvm_note.exists() else None
            jvm = int(note) if note else None
            written = tmp.exists()
            settled = not written or now - tmp.stat().st_mtime >= SETTLE_SECONDS
        except (ValueError, OSError):
            continue
        # Live: its process, or its JVM (writing the archive as it exits), or an archive of an unknown
        # JVM written moments ago (its JVM may still be writing).
        if pid_alive(pid) or (jvm is not None and pid_alive(jvm)) or (jvm is None and not settled):
            recording = True
            continue
        try:
            if written and tmp.stat().st_size > 0 and not final.exists():
                tmp.replace(final)  # atomic: a start sees the whole archive or none
            else:
                tmp.unlink(missing_ok=True)  # its JVM was killed before it wrote, or another recording won
            jvm_note.unlink(missing_ok=True)
        except OSError:
            continue
    if directory.is_dir():
        _prune(directory, final, now)
    if final.exists():
        try:
            os.utime(final)  # in use: kept by other installs' pruning
        except OSError:
            pass
        return f"-XX:SharedArchiveFile={final} {QUIET}"
    if recording:
        return ""
    tmp = directory / f"{final.name}.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp.with_name(tmp.name + ".jvm").write_text("")  # the claim: no JVM yet
    except OSError:
        return ""
    return f"-XX:ArchiveClassesAtExit={tmp} {QUIET}"


def note_recorder(java_options: str, jvm_pid: int) -> None:
    """Records which JVM writes the archive named in ``java_options`` (no-op when not recording)."""
    for opt in java_options.split():
        if opt.startswith("-XX:ArchiveClassesAtExit="):
            try:
                Path(opt.split("=", 1)[1] + ".jvm").write_text(str(jvm_pid))
            except OSError:
                pass
