"""Exceptions raised on bad input. Every message names the offending field and how to fix it."""

from __future__ import annotations


class SmtRlError(Exception):
    """Base class of smt_rl's own errors."""


class DatasetError(SmtRlError, ValueError):
    """A trajectory dataset folder is missing, truncated, corrupt or does not match the request."""


class SpaceError(SmtRlError, ValueError):
    """A gymnasium space is not supported (or two spaces that must match do not)."""


class ConfigError(SmtRlError, ValueError):
    """A configuration key or value is wrong."""


class NonFiniteError(SmtRlError, ValueError):
    """NaN or infinity: in an environment's observation or reward, or in a training loss."""


class RunFolderError(SmtRlError, ValueError):
    """A run folder's own records (``metrics.jsonl``, ``summary.json``) are damaged."""


class FolderLockedError(SmtRlError, RuntimeError):
    """Another live process writes to the folder (a run, a dataset, a benchmark) this one would
    write to; the message names it and when it started."""


class MissingExtraError(SmtRlError, ImportError):
    """A feature needs a package of an optional extra that is not installed; the message names
    the extra to install (``pip install 'smt-rl[popgym]'``)."""
