"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class KglfrError(Exception):
    """An error caused by the user's input (paths, files, options), with what to do about it."""

    exit_code = 2


class DatasetError(KglfrError):
    """A dataset folder or split file that does not match the expected layout."""


class StoreError(KglfrError):
    """A prepared store that is missing, damaged or stale."""


class DiskFullError(KglfrError):
    """Not enough free disk space for what is about to be written."""
