"""Phase output directories: keyed by content, written in a staging place, published last.

A phase writes into ``<home>/outputs/<phase>/<key>/`` where ``key`` hashes (phase, phase
version, its config section, its inputs' fingerprints). The directory is filled under a
temporary name, the manifest is written last, and the directory is renamed into place, so
a directory with a ``manifest.json`` is always complete and is reused on rerun. This is the
only reuse check in the project (no second cache, such as Prefect's persisted results).

Two runs that want the same output take turns on a lock file beside it: the second waits,
then finds the published directory and reuses it, instead of building it again and
replacing it under the first run's feet.

An output's fingerprint covers what consumers read (weights, tokenizer, data, reports); a
phase names its *records* (logs, per-step metrics, timings: files that differ between two
runs of the same key) so that they stay out of it. Every file is still listed with its
digest in the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from phases.config import canonical_json
from phases.errors import LifecycleError, NotReadyError, write_error
from phases.refs import PhaseRef

MANIFEST = "manifest.json"
CONTENT_FINGERPRINT = "content_fingerprint"  # summary key a build may return to replace the byte digest
log = logging.getLogger("lifecycle.storage")


def phase_key(phase: str, version: int, section: Mapping[str, Any], input_fingerprints: Mapping[str, str]) -> str:
    """The hash that names a phase's output directory."""
    payload = {"phase": phase, "version": version, "config": section, "inputs": dict(sorted(input_fingerprints.items()))}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:20]


def output_dir(home: Path, phase: str, key: str) -> Path:
    return Path(home) / "outputs" / phase / key


def is_complete(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / MANIFEST).read_text())


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def file_digests(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (but the manifest and hidden files), by relative path."""
    path = Path(path)
    files: dict[str, str] = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel == MANIFEST or any(part.startswith(".") for part in f.relative_to(path).parts):
            continue
        h = hashlib.sha256()
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        files[rel] = h.hexdigest()
    return files


def content_fingerprint(files: Mapping[str, str], records: tuple[str, ...] = ()) -> str:
    """One digest over the files' paths and digests, leaving out those matching a ``records`` glob."""
    content = {rel: d for rel, d in files.items() if not any(fnmatch.fnmatch(rel, g) for g in records)}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def dir_digest(path: Path, records: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
    """The content fingerprint of a directory and its per-file digests."""
    files = file_digests(path)
    return content_fingerprint(files, records), files


@contextlib.contextmanager
def output_lock(final: Path):
    """An exclusive lock on one output directory, held while it is checked, built and published."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # Beside the phase folders, not in them: outputs/<phase>/ lists published outputs only.
    locks = final.parent.parent / ".locks"
    locks.mkdir(exist_ok=True)
    with file_lock(locks / f"{final.parent.name}-{final.name}.lock", f"{final} is being built by another run: waiting for it"):
        yield


@contextlib.contextmanager
def file_lock(path: Path, waiting: str):
    """An exclusive flock on ``path`` (created if missing); logs ``waiting`` when another process holds it."""
    with Path(path).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s", waiting)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def readable_by_all(path: Path) -> None:
    """Give every published file the umask's mode: transformers 5 writes model.safetensors
    through a private temp file (mode 0600), which a server running as another user could
    not read."""
    umask = os.umask(0)
    os.umask(umask)
    for f in Path(path).rglob("*"):
        if f.is_file():
            f.chmod(0o666 & ~umask)


def ref_from_dir(path: Path) -> PhaseRef:
    m = read_manifest(path)
    return PhaseRef(phase=m["phase"], key=m["key"], uri=str(Path(path).resolve()), fingerprint=m["fingerprint"], summary=m.get("summary", {}))


def materialize(
    *,
    home: Path,
    phase: str,
    key: str,
    build: Callable[[Path], dict[str, Any]],
    manifest: Mapping[str, Any] | None = None,
    records: tuple[str, ...] = (),
    reuse_only: bool = False,
) -> tuple[PhaseRef, bool]:
    """Run ``build(staging_dir) -> summary`` unless the output keyed ``key`` exists; publish atomically.

    ``manifest`` holds what the manifest records besides the result (version, config,
    inputs, lineage); ``records`` are the globs kept out of the fingerprint. With
    ``reuse_only`` a missing output raises :class:`NotReadyError` instead of being built.
    Returns the output's reference and whether it was reused.
    """
    final = output_dir(home, phase, key)
    if is_complete(final):  # the common case on a rerun: no lock needed to read a published output
        log.info("%s: reusing finished output %s", phase, final)
        return ref_from_dir(final), True
    if reuse_only:
        raise NotReadyError(f"phase {phase} has no finished output for this config (key {key}); add it to --phases")
    try:
        with output_lock(final):
            if is_complete(final):  # another run published it while this one waited
                log.info("%s: reusing the output another run just published: %s", phase, final)
                return ref_from_dir(final), True
            _build_and_publish(final, phase, key, build, manifest, records)
            return ref_from_dir(final), False
    except BaseException as e:
        plain = explained(e, phase, final)
        if plain is None:
            raise
        raise plain from e


def _build_and_publish(final: Path, phase: str, key: str, build, manifest, records) -> None:
    """Build into a staging directory beside ``final``, write the manifest last, rename into place;
    on any failure the staging directory goes and nothing is published."""
    staging = final.parent / f".{key}.staging-{uuid.uuid4().hex[:8]}"
    started = time.time()
    try:
        staging.mkdir()
        summary = build(staging)
        readable_by_all(staging)
        fingerprint, files = dir_digest(staging, records)
        # A phase may vouch for its content with its own digest (the data phase hashes rows,
        # which stay identical when only a writer's footer bytes differ, e.g. across Spark masters).
        fingerprint = summary.pop(CONTENT_FINGERPRINT, None) or fingerprint
        write_json_atomic(
            staging / MANIFEST,
            {
                "phase": phase,
                "key": key,
                "fingerprint": fingerprint,
                **dict(manifest or {}),
                "summary": summary,
                "files": files,
                "records": list(records),
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "duration_s": round(time.time() - started, 3),
            },
        )
        if final.exists():  # an unfinished leftover from a killed run: replace it
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def explained(err: BaseException, phase: str, final: Path) -> LifecycleError | None:
    """A build's or publish's failure that arrives as a system's raw error, said in one line.

    A write the disk or file system refused (full, a size limit, read-only, no permission, a file
    where a directory must be) becomes a :class:`~phases.errors.WriteError` naming the path; a
    Spark job's failure (PySpark's or Py4J's multi-line text) keeps Spark's reason. Both fail the
    same way again, so neither is retried. Anything else is left as it is (None).
    """
    if isinstance(err, OSError):
        return write_error(err, f"phase {phase}'s output {final}", default_path=final, home=final.parents[2])
    if type(err).__module__.startswith(("pyspark", "py4j")):
        from phases.data.spark import job_error

        return job_error(err)
    return None
