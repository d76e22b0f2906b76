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
