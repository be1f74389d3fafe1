"""What the machine can do, decided once and said in the log: precision, dtype names, CPU threads.

`dtype='auto'` must mean the fastest precision this machine computes well, not the one the developer's
machine had. On CUDA that is bf16 where the GPU supports it, else fp16. On a CPU it is bf16 only where
the CPU computes bf16 natively (AVX512-BF16 / AMX on x86, BF16 on Arm): on an AVX2-only CPU bf16 is
emulated and a matmul under bf16 autocast is ~35x slower than in fp32, so 'auto' picks fp32 there. The
CPU answer combines torch's own query (oneDNN's bf16 support) with a 128x512x512 matmul probe timed in
both precisions; the probe's result is cached per machine (CPU model, flags, torch version, threads).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import dataclass

from xtune.errors import ConfigError

log = logging.getLogger("xtune")

# Every spelling of a dtype xtune accepts, in recipes and on the command line.
DTYPE_ALIASES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "half": "float16",
                 "float16": "float16", "fp32": "float32", "float": "float32", "float32": "float32"}
PRECISIONS = ("bfloat16", "float16", "float32")
# A CPU counts as computing bf16 natively when a bf16 matmul takes at most this share of the fp32 time.
_NATIVE_BF16_MAX_RATIO = 0.9


def dtype_name(value) -> str:
    """'bf16' / torch.bfloat16 / 'bfloat16' ... -> 'bfloat16'; 'auto' and None stay 'auto'."""
    if value in (None, "auto"):
        return "auto"
    name = str(value).removeprefix("torch.")
    if name not in DTYPE_ALIASES:
        raise ConfigError(f"unknown dtype {value!r}", hint="use auto, bfloat16, float16 or float32")
    return DTYPE_ALIASES[name]


def torch_dtype(value):
    """The torch dtype for a name from `dtype_name` (which must not be 'auto')."""
    import torch

    return getattr(torch, dtype_name(value))


@dataclass(frozen=True)
class Precision:
    """A decided precision and why, as the training log states it."""

    name: str  # bfloat16 | float16 | float32
    reason: str
    warning: str | None = None  # set when an explicit request will run slowly here

    def __str__(self) -> str:
        return f"precision {self.name} ({self.reason})"


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_precision(requested="auto") -> Precision:
    """The training / inference precision for `requested` ('auto' or a dtype name) on this machine."""
    import torch

    name = dtype_name(requested)
    if on_cuda():
        bf16 = torch.cuda.is_bf16_supported()
        if name == "auto":
            gpu = torch.cuda.get_device_name(0)
            return Precision("bfloat16", f"{gpu} supports bf16") if bf16 else \
                Precision("float16", f"{gpu} has no bf16")
        return Precision(name, "as requested")
    if name == "float16":
        raise ConfigError("dtype 'float16' needs a CUDA GPU (CPUs train in float32 or bfloat16)",
                          hint="use 'auto' or 'bfloat16'")
    cpu = cpu_bf16()
    if name == "auto":
        return Precision("bfloat16" if cpu.native else "float32", cpu.reason)
    if name == "bfloat16" and not cpu.native:
        return Precision(name, "as requested", warning=f"bfloat16 was requested but {cpu.reason}: "
                         f"every matmul will run about {cpu.slowdown:.0f}x slower than in float32 "
                         "(use dtype 'auto' to get float32 here)")
    return Precision(name, "as requested")


@dataclass(frozen=True)
class CpuBf16:
    native: bool
    reason: str
    slowdown: float  # bf16 matmul time / fp32 matmul time, measured


def _cpu_key() -> str:
    import platform

    import torch

    model = flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = " ".join(sorted(f for f in line.split(":",
                                                                  1)[1].split() if "avx" in f or "amx" in f))
    except OSError:
        model = platform.processor()
    return f"{model}|{flags}|torch {torch.__version__}|{torch.backends.cpu.get_cpu_capability()}|" \
           f"{torch.get_num_threads()} threads|{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}"


def _probe_ratio() -> float:
    """min time of a bf16 matmul / min time of the same fp32 matmul (128x512 @ 512x512), about 50 ms."""
    import torch

    a, b = torch.randn(128, 512), torch.randn(512, 512)
    pairs = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    best = {}
    for label, (x, y) in pairs.items():
        x @ y  # warm-up: oneDNN builds its kernel on first use
        times = []
        for _ in range(5):
            start = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - start)
            if label == "bf16" and times[-1] > 40 * best["fp32"]:
                break  # emulated bf16: one sample says enough
        best[label] = min(times)
    return best["bf16"] / max(best["fp32"], 1e-9)


@functools.cache
def cpu_bf16() -> CpuBf16:
    """Whether this CPU computes bf16 natively, measured once per machine and cached."""
    import torch

    from xtune.fileio import atomic_write_text, cache_dir

    capability = torch.backends.cpu.get_cpu_capability()
    key = _cpu_key()
    path = cache_dir("hardware") / "cpu_bf16.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    ratio = cached.get(key)
    if ratio is None:
        ratio = _probe_ratio()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({**cached, key: ratio}, indent=1))
        except OSError:
            pass  # a read-only home: measure again next time
    onednn = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if onednn and ratio <= _NATIVE_BF16_MAX_RATIO:
        return CpuBf16(True, f"this CPU computes bf16 natively: {capability}, bf16 matmul {1 / ratio:.1f}x "
                             "as fast as fp32", ratio)
    why = (f"a bf16 matmul takes {ratio:.1f}x the fp32 time" if onednn
           else "oneDNN has no bf16 kernels for it")
    return CpuBf16(False, f"this CPU has no native bf16: {capability}, {why}", ratio)


def available_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="utf-8") as fh:
            quota, period = fh.read().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def set_cpu_threads() -> str:
    """torch's intra-op threads = the CPUs this process may use (torch counts the host's cores, which in a
    container oversubscribes the quota and slows every op down). Returns the log line."""
    import torch

    wanted = available_cpus()
    if os.environ.get("OMP_NUM_THREADS"):
        return f"threads {torch.get_num_threads()} (OMP_NUM_THREADS)"
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return f"threads {wanted} ({wanted} CPUs available to this process)"
