"""Class data sharing for the Spark driver: when an archive is recorded, shared, adopted or left alone."""

import os
import subprocess
import sys
import time

import pytest

from phases.data import cds


@pytest.fixture
def archive_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFECYCLE_SPARK_CDS", raising=False)
    if not cds._java_binary():
        pytest.skip("no java")
    return tmp_path


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_first_start_records_then_a_later_start_shares(archive_dir):
    opts = cds.driver_java_options(archive_dir)
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    assert f"-XX:ArchiveClassesAtExit={final}.{os.getpid()}.tmp" in opts
    # While this process (the recorder) lives, another start neither records nor shares.
    (archive_dir / f"{final.name}.{os.getpid()}.tmp").write_bytes(b"archive")
    assert cds.driver_java_options(archive_dir) == ""
    # Once the recorder and its JVM have ended, the recording is adopted under the final name.
    dead = _dead_pid()
    (archive_dir / f"{final.name}.{os.getpid()}.tmp").rename(archive_dir / f"{final.name}.{dead}.tmp")
    (archive_dir / f"{final.name}.{os.getpid()}.tmp.jvm").rename(archive_dir / f"{final.name}.{dead}.tmp.jvm")
    cds.note_recorder(f"-XX:ArchiveClassesAtExit={archive_dir / f'{final.name}.{dead}.tmp'}", _dead_pid())
    assert cds.driver_java_options(archive_dir).startswith(f"-XX:SharedArchiveFile={final} ")
    assert final.read_bytes() == b"archive" and sorted(p.name for p in archive_dir.iterdir()) == [final.name]


def test_a_recording_jvm_still_writing_is_waited_for(archive_dir):
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    tmp = archive_dir / f"{final.name}.{_dead_pid()}.tmp"
    tmp.write_bytes(b"partial")
    cds.note_recorder(f"-XX:ArchiveClassesAtExit={tmp}", os.getpid())  # "the JVM" is alive: still writing
    assert cds.driver_java_options(archive_dir) == "" and not final.exists()


def test_an_unnoted_recording_is_adopted_only_after_it_settles(archive_dir):
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    tmp = archive_dir / f"{final.name}.{_dead_pid()}.tmp"
    tmp.write_bytes(b"archive")
    assert cds.driver_java_options(archive_dir) == ""  # just written, writer unknown: wait
    later = tmp.stat().st_mtime + cds.SETTLE_SECONDS + 1
    assert cds.driver_java_options(archive_dir, now=later).startswith("-XX:SharedArchiveFile=")


def test_an_empty_recording_is_dropped_and_recording_starts_again(archive_dir):
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    tmp = archive_dir / f"{final.name}.{_dead_pid()}.tmp"
    tmp.write_bytes(b"")
    cds.note_recorder(f"-XX:ArchiveClassesAtExit={tmp}", _dead_pid())
    assert "-XX:ArchiveClassesAtExit=" in cds.driver_java_options(archive_dir)
    assert not tmp.exists() and not final.exists()


def test_switched_off(archive_dir, monkeypatch):
    monkeypatch.setenv("LIFECYCLE_SPARK_CDS", "0")
    assert cds.driver_java_options(archive_dir) == ""


def test_a_finished_recording_beside_an_archive_is_removed(archive_dir):
    """Two recordings can finish (a start that saw none alive); the second is not kept as a stray 150 MB file."""
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    final.write_bytes(b"first")
    tmp = archive_dir / f"{final.name}.{_dead_pid()}.tmp"
    tmp.write_bytes(b"second")
    cds.note_recorder(f"-XX:ArchiveClassesAtExit={tmp}", _dead_pid())
    assert cds.driver_java_options(archive_dir).startswith(f"-XX:SharedArchiveFile={final} ")
    assert sorted(p.name for p in archive_dir.iterdir()) == [final.name] and final.read_bytes() == b"first"


def test_a_cache_path_with_whitespace_is_not_shared(tmp_path):
    """Spark splits Java options on whitespace: such a path would break the driver's start."""
    assert cds.driver_java_options(tmp_path / "with space") == ""


def test_a_recorder_is_seen_before_its_archive_exists(archive_dir):
    """The archive appears only as the recording JVM exits; until then the recorder's claim keeps other starts
    from recording a second copy (two recorders used to run side by side in the test suite)."""
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (archive_dir / f"{final.name}.{other.pid}.tmp.jvm").write_text("")  # what driver_java_options writes
        assert cds.driver_java_options(archive_dir) == ""
        cds.note_recorder(f"-XX:ArchiveClassesAtExit={archive_dir / f'{final.name}.{other.pid}.tmp'}", other.pid)
        assert cds.driver_java_options(archive_dir) == ""
    finally:
        other.kill()
        other.wait()
    # The recorder died without writing anything: its claim is cleared and this start records.
    opts = cds.driver_java_options(archive_dir)
    assert f"-XX:ArchiveClassesAtExit={final}.{os.getpid()}.tmp" in opts
    assert sorted(p.name for p in archive_dir.iterdir()) == [f"{final.name}.{os.getpid()}.tmp.jvm"]


def test_a_claim_without_a_noted_jvm_waits_for_a_fresh_archive(archive_dir):
    """Its Python process died before noting the JVM, which may still be writing: adopted only once settled."""
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    dead = _dead_pid()
    tmp = archive_dir / f"{final.name}.{dead}.tmp"
    tmp.with_name(tmp.name + ".jvm").write_text("")
    tmp.write_bytes(b"archive")
    assert cds.driver_java_options(archive_dir) == "" and not final.exists()
    later = tmp.stat().st_mtime + cds.SETTLE_SECONDS + 1
    assert cds.driver_java_options(archive_dir, now=later).startswith(f"-XX:SharedArchiveFile={final} ")
    assert sorted(p.name for p in archive_dir.iterdir()) == [final.name]


def test_archives_of_other_installs_unused_for_long_are_removed(archive_dir):
    final = archive_dir / f"spark-cds-{cds.archive_key()}.jsa"
    final.write_bytes(b"ours")
    old, recent = archive_dir / "spark-cds-0000000000000000.jsa", archive_dir / "spark-cds-1111111111111111.jsa"
    for path, days in ((old, cds.UNUSED_DAYS + 1), (recent, 1), (final, cds.UNUSED_DAYS + 5)):
        path.write_bytes(b"x") if path != final else None
        stamp = time.time() - days * 86400
        os.utime(path, (stamp, stamp))
    assert cds.driver_java_options(archive_dir).startswith(f"-XX:SharedArchiveFile={final} ")
    assert not old.exists() and recent.exists()
    assert time.time() - final.stat().st_mtime < 60  # sharing it marks it used



def test_a_non_empty_conf_dir_on_the_class_path_turns_sharing_off(archive_dir, monkeypatch, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf))
    assert cds.driver_java_options(archive_dir).startswith("-XX:ArchiveClassesAtExit=")  # an empty one is fine
    for path in archive_dir.glob("*.tmp*"):
        path.unlink()
    (conf / "spark-defaults.conf").write_text("")
    assert cds.classpath_directories() == [str(conf)]
    assert cds.driver_java_options(archive_dir) == ""
    assert not list(archive_dir.glob("spark-cds-*"))  # nothing claimed
    monkeypatch.delenv("SPARK_CONF_DIR")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(conf))
    assert cds.driver_java_options(archive_dir) == ""
