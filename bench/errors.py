"""One exception type for bad input: the CLI prints its message as one sentence and exits non-zero."""

from __future__ import annotations


class BenchError(Exception):
    """A user-facing error: the message is one clear sentence; no traceback is shown by the CLI."""
