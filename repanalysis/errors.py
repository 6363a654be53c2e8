"""User-facing errors: each carries one line that says what was wrong and what was expected.

The CLI prints ``error: <message>`` and exits non-zero without a traceback (unless --debug).
Library users catch :class:`RepanalysisError`.
"""
from __future__ import annotations

# What the command line says when Ctrl-C stops it (during start-up too: repanalysis/__init__.py)
INTERRUPTED = "interrupted; re-run the same command to finish (an extraction resumes where it stopped)"


class RepanalysisError(Exception):
    """Bad input or an unusable environment. ``str(err)`` is a single explanatory line."""

    exit_code = 2


class CheckpointError(RepanalysisError):
    """A checkpoint that cannot be read, is unsafe to read, or does not fit the architecture."""


class DataError(RepanalysisError):
    """A data set, label file, box file or array that is missing, empty or inconsistent."""


class DumpError(RepanalysisError):
    """A Dump or seed .pt file that is missing, incomplete or malformed."""


class ConfigError(RepanalysisError):
    """No usable default configuration."""


def last_error_line(message: str) -> str:
    """The line of a multi-line error message that says what went wrong: its last non-empty line, without a
    leading ``SomeError: `` (a DataLoader worker wraps our error in its traceback; a TorchScript error opens
    with "The following operation failed in the TorchScript interpreter." and ends with the real one)."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if len(lines) <= 1:
        return str(message).strip()
    head, sep, rest = lines[-1].partition(": ")
    return rest if sep and head.rsplit(".", 1)[-1].endswith("Error") else lines[-1]
