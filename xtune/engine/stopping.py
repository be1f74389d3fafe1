"""Stopping a run without losing it: SIGTERM (preemption) and Ctrl-C both save a checkpoint first.

While the loop trains, the first SIGTERM or Ctrl-C (SIGINT) only asks it to stop: the step under way
finishes, a checkpoint is written, and the run exits (143 for SIGTERM, 130 for Ctrl-C, like a process
killed by that signal) with one line naming the checkpoint to `--resume` from. A second Ctrl-C stops at
once, and its line says which steps that loses. In a multi-process run every process receives the
terminal's Ctrl-C; they agree on the step to stop after (`XtuneTrainLoop.run_step`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from xtune.errors import XtuneError

log = logging.getLogger("xtune")
_NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}


class TrainingInterrupted(XtuneError):
    """A stop was asked for; a checkpoint was written and the run stops with the signal's exit code."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = 143):
        super().__init__(message, hint)
        self.exit_code = exit_code


def exit_code_for(signum: int) -> int:
    return 128 + int(signum)


@contextlib.contextmanager
def stop_on_signals(loop):
    """While training: the first SIGTERM / Ctrl-C sets `loop.stop_signal` (the loop saves and stops at the
    end of the step); a second Ctrl-C raises at once. The previous handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame) -> None:
        if signum == signal.SIGINT and loop.stop_signal == signal.SIGINT:
            raise TrainingInterrupted(
                f"interrupted by a second Ctrl-C during step {loop.iter + 1}: no checkpoint was saved for "
                f"the steps after {loop.last_saved or 'the start'}", exit_code=exit_code_for(signum),
                hint="--resume auto continues from the last checkpoint" if loop.last_saved else None)
        if loop.stop_signal is None:
            loop.stop_signal = signum
            if signum == signal.SIGINT:
                log.warning("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again "
                            "stops at once and loses the steps since the last checkpoint)")

    previous = {s: signal.signal(s, request_stop) for s in _NAMES}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stopped(signum: int, step: int, checkpoint: str) -> TrainingInterrupted:
    """The error a requested stop ends the run with, after its checkpoint was written."""
    how = "terminated" if signum == signal.SIGTERM else "interrupted"
    return TrainingInterrupted(f"{how} ({_NAMES.get(signum, signum)}) at step {step}; checkpoint "
                               f"{checkpoint} saved", hint="continue with --resume auto",
                               exit_code=exit_code_for(signum))
