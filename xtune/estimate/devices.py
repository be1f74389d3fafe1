"""The free memory `xtune train` compares the estimate with: CUDA's free memory on this process's GPU,
else the RAM the kernel reports as available (MemAvailable) plus what this process already holds (the
estimate counts the process's own runtime)."""

from __future__ import annotations

import os


def free_memory() -> tuple[str, int | None, int]:
    """(device kind, free bytes or None when unknown, number of training processes)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    import torch  # `xtune train` imports it next anyway

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(int(os.environ.get("LOCAL_RANK", 0)))
        return "cuda", int(free), world
    return "cpu", _available_ram(), world


def _available_ram() -> int | None:
    try:
        meminfo = open("/proc/meminfo", encoding="ascii").read()
        status = open("/proc/self/status", encoding="ascii").read()
    except OSError:
        return None
    available = _kib(meminfo, "MemAvailable:")
    own = _kib(status, "VmRSS:") or 0
    return None if available is None else (available + own) * 1024


def _kib(text: str, key: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return None
