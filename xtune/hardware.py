"""What the machine can do, decided once and said in the log: precision, dtype names, CPU threads.

`dtype='auto'` must mean the fastest precision this machine computes well, not the one the developer's
machine had. On CUDA that is bf16 where the GPU supports it, else fp16. On a CPU it is bf16 only where
the CPU computes bf16 natively (AVX512-BF16 / AMX on x86, BF16 on Arm): on an AVX2-only CPU bf16 is
emulated and a matmul under bf16 autocast is ~35x slower than in fp32, so 'auto' picks fp32 there. The
CPU answer is torch's own first (oneDNN's bf16 support, the CPU's bf16 instructions); only where that
cannot decide does a 128x512x512 matmul probe time both precisions. The probe's answer is cached per CPU
model (with torch's capability and version), and only once two measurements agree clearly: a doubtful one
(near the threshold, or a busy moment) is measured again by the next run. An explicit dtype is never timed.
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
# A measured ratio within this factor of the threshold is doubtful: cached as such and measured again.
_DOUBT_FACTOR = 1.25
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below the first ISA with bf16 instructions.
_ONEDNN_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}
_X86_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


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
    if name == "auto":
        cpu = cpu_bf16()
        return Precision("bfloat16" if cpu.native else "float32", cpu.reason)
    # An explicit dtype wins and is never timed; only torch's own answer can add a warning.
    cpu = bf16_query() if name == "bfloat16" else None
    if cpu is not None and not cpu.native:
        return Precision(name, "as requested", warning=f"bfloat16 was requested but {cpu.reason}: "
                         "every matmul will run many times slower than in float32 "
                         "(use dtype 'auto' to get float32 here)")
    return Precision(name, "as requested")


@dataclass(frozen=True)
class CpuBf16:
    native: bool
    reason: str
    slowdown: float | None = None  # bf16 matmul time / fp32 matmul time, when it was measured


def _cpu_info() -> tuple[str, set[str]]:
    """(CPU model, flags) from /proc/cpuinfo; off Linux the model is platform.processor() and no flags."""
    import platform

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key in ("model name", "Model", "cpu model") and not model:
                    model = value
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def bf16_query() -> CpuBf16 | None:
    """What torch and the CPU say of native bf16 without timing anything, or None when that cannot decide:
    no oneDNN bf16 kernels (or oneDNN capped below its bf16 ISAs) is no; Arm with oneDNN's bf16 (its BF16
    instructions) or x86 with avx512_bf16 / amx_bf16 is yes; an x86 AVX512 CPU without them is left to
    the probe (oneDNN emulates bf16 there, at a speed only a measurement tells)."""
    import platform

    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return CpuBf16(False, f"this CPU has no native bf16: {capability}, oneDNN has no bf16 kernels for it")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa in _ONEDNN_WITHOUT_BF16:
        return CpuBf16(False, f"this CPU has no native bf16: {capability}, oneDNN is capped at {isa} "
                              "(ONEDNN_MAX_CPU_ISA)")
    if platform.machine().lower() in ("aarch64", "arm64"):
        return CpuBf16(True, f"this CPU computes bf16 natively: {capability}, Arm BF16 instructions")
    found = sorted(_cpu_info()[1] & _X86_BF16_FLAGS)
    if found:
        return CpuBf16(True, f"this CPU computes bf16 natively: {capability}, {', '.join(found)}")
    return None


def cpu_cache_key() -> str:
    """What the probe's cached answer belongs to: the CPU model and its AVX512 / AMX flags, torch's
    capability and version, and oneDNN's ISA cap."""
    import torch

    model, flags = _cpu_info()
    relevant = " ".join(sorted(f for f in flags if f.startswith(("avx512", "amx"))))
    return (f"{model}|{relevant}|{torch.backends.cpu.get_cpu_capability()}|torch {torch.__version__}|"
            f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '')}")


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


def settled(samples: list[float]) -> bool:
    """Whether measurements decide: every one on the same side of the threshold and none near it (a busy
    moment slows one precision's timing and gives readings that disagree or sit at the line)."""
    low, high = _NATIVE_BF16_MAX_RATIO / _DOUBT_FACTOR, _NATIVE_BF16_MAX_RATIO * _DOUBT_FACTOR
    sides = {r <= _NATIVE_BF16_MAX_RATIO for r in samples}
    return len(sides) == 1 and not any(low < r < high for r in samples)


def measured_ratio() -> tuple[float, bool]:
    """(bf16 / fp32 matmul time ratio, settled) of this CPU: a settled cached answer for this CPU
    (`cpu_cache_key`), else measured twice. Two readings that agree clearly are cached for good; a doubtful
    answer (the slower reading) is cached as doubtful and measured again by the next process."""
    from xtune.fileio import atomic_write_text, cache_dir

    key, path = cpu_cache_key(), cache_dir("hardware") / "cpu_bf16.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    entry = cached.get(key) if isinstance(cached, dict) else None
    if isinstance(entry, dict) and entry.get("settled") and isinstance(entry.get("ratio"), (int, float)):
        return float(entry["ratio"]), True
    samples = [_probe_ratio(), _probe_ratio()]
    entry = {"ratio": max(samples), "samples": samples, "settled": settled(samples)}
    if not entry["settled"]:
        log.info("CPU bf16 probe in doubt (bf16/fp32 time %s, threshold %s): measured again next run",
                 ", ".join(f"{r:.2f}" for r in samples), _NATIVE_BF16_MAX_RATIO)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**(cached if isinstance(cached, dict) else {}), key: entry},
                                           indent=1))
    except OSError:
        pass  # a read-only home: measure again next time
    return entry["ratio"], entry["settled"]


@functools.cache
def cpu_bf16() -> CpuBf16:
    """Whether this CPU computes bf16 natively: torch's and the CPU's own answer (`bf16_query`), and only
    where that cannot decide, the matmul probe (`measured_ratio`): bf16 on clear evidence only, so a
    doubtful measurement means float32 for this run. Decided once per process."""
    import torch

    decided = bf16_query()
    if decided is not None:
        return decided
    capability = torch.backends.cpu.get_cpu_capability()
    ratio, sure = measured_ratio()
    if sure and ratio <= _NATIVE_BF16_MAX_RATIO:
        return CpuBf16(True, f"this CPU computes bf16 natively: {capability}, bf16 matmul {1 / ratio:.1f}x "
                             "as fast as fp32", ratio)
    if not sure:
        return CpuBf16(False, f"bf16 on this CPU is not settled: {capability}, the matmul probe was "
                              "inconclusive (a busy moment, or near the threshold); measured again next run",
                       ratio)
    return CpuBf16(False, f"this CPU has no native bf16: {capability}, a bf16 matmul takes {ratio:.1f}x "
                          "the fp32 time", ratio)


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
