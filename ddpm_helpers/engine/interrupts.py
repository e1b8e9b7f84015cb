"""Stopping a long run without losing it (chapter "Training", ``sec-training``).

Ctrl-C in a terminal, the stop button of Jupyter and Colab (both send SIGINT) and SIGTERM (what
job schedulers, ``docker stop`` and ``kill`` send) do not kill :func:`ddpm_helpers.engine.training.train`
mid-step: :func:`stop_requests` turns the first such signal into a request that the loop reads
after the step it is in; the loop then saves a checkpoint of that step and raises
:class:`TrainingInterrupted`, whose message is the command that continues the run. A second
signal stops at once (plain ``KeyboardInterrupt``), for a run that hangs.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a signal after saving a checkpoint; the message says how to continue."""

    def __init__(self, message: str, signal_number: int, step: int):
        super().__init__(message)
        self.signal_number, self.step = signal_number, step

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130 for Ctrl-C)."""
        return 128 + int(self.signal_number)


class StopRequest:
    """Set by the first SIGINT or SIGTERM (``signal_number``); a second one raises ``KeyboardInterrupt``."""

    def __init__(self):
        self.signal_number = None

    @property
    def requested(self) -> bool:
        """Whether a signal has asked the run to stop."""
        return self.signal_number is not None

    @property
    def name(self) -> str:
        """The signal's name (``"SIGINT"``, ``"SIGTERM"``), or ``""`` before one came."""
        return signal.Signals(self.signal_number).name if self.requested else ""

    def handle(self, number, frame):
        """The handler: record the first signal; the second raises ``KeyboardInterrupt``."""
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(number).name}: stopped without saving")
        self.signal_number = number


@contextlib.contextmanager
def stop_requests(signals=(signal.SIGINT, signal.SIGTERM)):
    """A :class:`StopRequest` that SIGINT and SIGTERM set while the block runs (the previous
    handlers come back after it). Outside Python's main thread, where handlers cannot be set,
    the request is never set and signals act as before."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {number: signal.getsignal(number) for number in signals}
    for number in signals:
        signal.signal(number, stop.handle)
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
