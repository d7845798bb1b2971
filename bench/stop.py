"""Graceful stops of THE training loop: SIGINT and SIGTERM end it at a step boundary with a checkpoint."""

from __future__ import annotations

import signal
from contextlib import suppress


class StopFlag:
    """SIGINT (Ctrl-C) and SIGTERM set the flag; the loop writes a checkpoint at the next step boundary and returns.

    `signum` is the signal that stopped the run (the CLI exits with 128 + signum); the class keeps the last one
    seen in this process (`last_signal`) for callers that only get the TrainResult. A second Ctrl-C while the
    flag is set aborts at once (KeyboardInterrupt); checkpoints are atomic, so none is left half-written.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    last_signal: int | None = None

    def __init__(self) -> None:
        self.stop = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        StopFlag.last_signal = None
        for signum in self.SIGNALS:
            with suppress(ValueError):  # not the main thread: no handler
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop, self.signum = True, signum
        StopFlag.last_signal = signum

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous = {}
