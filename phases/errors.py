"""Errors the pipeline raises on purpose: each names the bad value and the fix."""

from __future__ import annotations


class LifecycleError(Exception):
    """Base class: an error whose message is meant for the user, on one line."""


class ConfigError(LifecycleError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(LifecycleError):
    """An input source is missing, empty or unreadable as a whole."""


class NotReadyError(LifecycleError):
    """A phase was asked to reuse an upstream output that was never finished."""


class LaunchError(LifecycleError):
    """A supervised subprocess (the DeepSpeed launcher) failed."""

    def __init__(self, message: str, returncode: int | None = None, log_tail: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.log_tail = log_tail


class SparkJobError(LifecycleError):
    """A Spark job failed after Spark's own task retries; the message is Spark's reason, on one line."""


class WriteError(LifecycleError):
    """A directory of the pipeline's state cannot be written: the disk is full, a file size limit
    was reached, the file system is read-only, permission is denied, or a file stands where a
    directory must be. Never retried: it fails the same way until someone frees space or moves
    ``LIFECYCLE_HOME``."""

    def __init__(self, message: str, path: str, errno: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno


# errno -> (what happened, what to do there, where else LIFECYCLE_HOME could point): the errors of a
# place that cannot take a write. The last four can also come from a read: they count only inside
# the state directory.
_WRITE_FAILURES = {
    "ENOSPC": ("no space left on the device", "free space there", "a file system with room"),
    "EDQUOT": ("disk quota exceeded", "free space within the quota", "a file system with room"),
    "EFBIG": ("file too large (a file size limit, ulimit -f, or the file system's maximum)", "raise the limit", "another file system"),
    "EROFS": ("read-only file system", "remount it writable", "a writable directory"),
    "EACCES": ("permission denied", "make it writable for this user", "a writable directory"),
    "EPERM": ("operation not permitted (an immutable or protected path?)", "make it writable", "a writable directory"),
    "ENOTDIR": ("a file stands where a directory must be", "move that file away", "another directory"),
    "EEXIST": ("it exists and is not a directory", "move that file away", "another directory"),
}
_ALSO_READS = ("EACCES", "EPERM", "ENOTDIR", "EEXIST")


def write_error(err: BaseException, what: str, default_path: object = None, home: object = None) -> WriteError | None:
    """``err`` as a :class:`WriteError` naming ``what``, the path and the fix, if it is a write the disk
    or file system refused (else None: a lost connection, say, is no such thing). With ``home`` (the
    state directory) an error of a path outside it is left alone unless it can only come from a write,
    and setting LIFECYCLE_HOME elsewhere is offered only for paths inside it."""
    import errno as errnos
    from pathlib import Path

    if not isinstance(err, OSError) or err.errno is None:
        return None
    name = errnos.errorcode.get(err.errno, "")
    path = str(err.filename if err.filename is not None else default_path)
    if name not in _WRITE_FAILURES or (name == "EEXIST" and not _is_file(path)):  # EEXIST of a rename race is no such write
        return None
    inside = home is None or Path(path).resolve().is_relative_to(Path(str(home)).resolve())
    if not inside and name in _ALSO_READS:
        return None
    happened, fix, elsewhere = _WRITE_FAILURES[name]
    if name == "ENOTDIR":
        path = _file_in_the_way(path)
    hint = f" or set LIFECYCLE_HOME to {elsewhere}" if inside else ""
    at = f" at {path}" if err.filename is not None else ""  # a write() names no file: ``what`` says where
    return WriteError(f"cannot write {what}: {happened} ({name}){at}; {fix}{hint}", path=path, errno=err.errno)


def write_fix(text: str) -> str | None:
    """The fix for a write refusal named in ``text`` by its C library message ("No space left on
    device": how the JVM says ENOSPC), for errors that are not OSErrors (a Spark task's)."""
    import errno as errnos
    import os

    for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS"):
        if os.strerror(getattr(errnos, name)) in text:
            _, fix, elsewhere = _WRITE_FAILURES[name]
            return f"{fix} or, for a path under LIFECYCLE_HOME, set LIFECYCLE_HOME to {elsewhere}"
    return None


def _is_file(path: str) -> bool:
    import os

    return os.path.lexists(path) and not os.path.isdir(path)


def _file_in_the_way(path: str) -> str:
    """The first ancestor of ``path`` that exists and is not a directory (ENOTDIR names the whole path)."""
    from pathlib import Path

    return next((str(p) for p in reversed(Path(path).parents) if _is_file(str(p))), path) if not _is_file(path) else path
