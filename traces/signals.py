"""Signals during a long job: noted, not fatal, so the job stops at a safe point."""

from __future__ import annotations

import signal as _signal
import threading


class SignalNotes:
    """While a long job runs: note SIGINT/SIGTERM/SIGHUP instead of dying, so the job can stop
    at a safe point and still write what it has (marked interrupted)."""

    SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)

    def __init__(self):
        self.pending: list[int] = []
        self.first: int | None = None
        self._saved: dict = {}

    @property
    def received(self) -> bool:
        return self.first is not None

    @property
    def name(self) -> str | None:
        return _signal.Signals(self.first).name if self.first is not None else None

    def _note(self, signum, frame) -> None:
        if self.first is None:
            self.first = signum
        self.pending.append(signum)

    def __enter__(self) -> "SignalNotes":
        if threading.current_thread() is threading.main_thread():  # signal() needs it
            for signum in self.SIGNALS:
                self._saved[signum] = _signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> bool:
        for signum, handler in self._saved.items():
            _signal.signal(signum, handler)
        return False
