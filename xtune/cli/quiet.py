"""Library messages that are noise in the user's terminal, dropped at their logger unless `--debug`.

Each entry is one known message of one library logger, matched by its start, so that any other warning of
that library still shows. `--debug` (or XTUNE_DEBUG=1) keeps them all, for a bug report.
"""

from __future__ import annotations

import logging

# logger name -> the start of each message dropped there
NOISE = {
    # bitsandbytes on a CPU with AVX512-BF16 tries the optional `kernels` package at import and says so when
    # it is missing; its own code falls back to a built-in kernel
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    # DeepSpeed (imported by transformers and peft) on a machine without a GPU, printed to stdout
    "DeepSpeed": ("Setting accelerator to CPU. If you have GPU or other accelerator",),
}


class _DropKnownNoise(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_library_noise(debug: bool) -> None:
    """Install (or, with `debug`, remove) the filters of `NOISE`; called before any library is imported, so
    a message logged at import time is caught too."""
    for name, prefixes in NOISE.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropKnownNoise)]:
            logger.removeFilter(old)
        if not debug:
            logger.addFilter(_DropKnownNoise(prefixes))
