"""Phase output directories: keyed by content, written in a staging place, published last.

A phase writes into ``<home>/outputs/<phase>/<key>/`` where ``key`` hashes (phase, phase
version, its config section, its inputs' fingerprints). The directory is filled under a
temporary name, the manifest is written last, and the directory is renamed into place, so
a directory with a ``manifest.json`` is always complete and is reused on rerun.
"""

from __future__ import annotations

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
from phases.refs import PhaseRef

MANIFEST = "manifest.json"
CONTENT_FINGERPRINT = "content_fingerprint"  # summary key a build may return to replace the byte digest
log = logging.getLogger("lifecycle.storage")


def phase_key(phase: str, version: int, section: Mapping[str, Any], input_fingerprints: Mapping[str, str]) -> str:
    """The one hash behind both the output directory and the Prefect cache key."""
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


def dir_digest(path: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> tuple[str, dict[str, str]]:
    """sha256 over every file's relative path and bytes, plus the per-file digests."""
    path = Path(path)
    files: dict[str, str] = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel in exclude or any(part.startswith(".") for part in f.relative_to(path).parts):
            continue
        h = hashlib.sha256()
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        files[rel] = h.hexdigest()
    total = hashlib.sha256(canonical_json(files).encode()).hexdigest()
    return total, files


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
    version: int,
    section: Mapping[str, Any],
    inputs: Mapping[str, PhaseRef],
    build: Callable[[Path], dict[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> tuple[PhaseRef, bool]:
    """Run ``build(staging_dir) -> summary`` unless the keyed output exists; publish atomically.

    Returns the output's reference and whether it was reused.
    """
    key = phase_key(phase, version, section, {n: r.fingerprint for n, r in inputs.items()})
    final = output_dir(home, phase, key)
    if is_complete(final):
        log.info("%s: reusing finished output %s", phase, final)
        return ref_from_dir(final), True
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{key}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    started = time.time()
    try:
        summary = build(staging)
        readable_by_all(staging)
        fingerprint, files = dir_digest(staging)
        # A phase may vouch for its content with its own digest (the data phase hashes rows,
        # which stay identical when only a writer's footer bytes differ, e.g. across Spark masters).
        fingerprint = summary.pop(CONTENT_FINGERPRINT, None) or fingerprint
        manifest = {
            "phase": phase,
            "version": version,
            "key": key,
            "fingerprint": fingerprint,
            "config": dict(section),
            "inputs": {n: {"uri": r.uri, "fingerprint": r.fingerprint, "key": r.key} for n, r in inputs.items()},
            "summary": summary,
            "files": files,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "duration_s": round(time.time() - started, 3),
            **(dict(extra) if extra else {}),
        }
        write_json_atomic(staging / MANIFEST, manifest)
        if final.exists():  # an unfinished leftover from a killed run: replace it
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ref_from_dir(final), False
