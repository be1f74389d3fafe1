"""What a training run prints: xtune's own lines on the console and in the run's log file, and the
libraries' noise kept out of both for the duration of the run only.

The console shows xtune's lines (the run's settings, progress, sample chats, checkpoints, warnings that call
for action); mmengine's environment report, config dump, hook table and per-iteration line go to the log
file only (`compat.quiet_console`). Deprecation warnings, weight-loading progress bars and bitsandbytes'
note about an optional kernel package are hidden while xtune trains, and everything is put back afterwards,
so a host process (a notebook, the tests) keeps its own settings. `--debug` shows it all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

log = logging.getLogger("xtune")
NOISY_LOGGERS = ("bitsandbytes", "transformers.modeling_utils", "datasets")


class _Stderr(logging.StreamHandler):
    """A console handler that writes to whatever `sys.stderr` is now (a host that swaps it, such as pytest
    or a notebook, sees the lines of every run, not only the first)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def console_logging() -> None:
    """Show xtune's own INFO lines on the console: of the first process only when there are several (the
    others show their warnings and errors)."""
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        if int(os.environ.get("RANK", "0") or 0) > 0:
            handler.setLevel(logging.WARNING)
        handler.setFormatter(
            logging.Formatter("%(asctime)s - xtune - %(levelname)s - %(message)s", "%m/%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


@contextlib.contextmanager
def quiet_libraries(debug: bool):
    """Library noise hidden for the duration of the block (nothing hidden with --debug)."""
    if debug:
        yield
        return
    import torch
    from transformers.utils import logging as hf_logging

    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    accelerator = os.environ.get("DS_ACCELERATOR")
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed warns at import that it guessed
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*use_reentrant.*")
            for name in NOISY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if accelerator is None:
            os.environ.pop("DS_ACCELERATOR", None)


@contextlib.contextmanager
def in_log_file(runner):
    """xtune's own lines also go to the run's log file, beside mmengine's."""
    files = [h for h in runner.logger.handlers if isinstance(h, logging.FileHandler)]
    for handler in files:
        log.addHandler(handler)
    try:
        yield
    finally:
        for handler in files:
            log.removeHandler(handler)
