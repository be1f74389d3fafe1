"""How `dtype='auto'` is decided on a CPU: torch's own answer first, the timing probe only where that cannot
decide, its cached answer tied to the CPU model and measured again while in doubt, and an explicit dtype
never timed. The probe itself is replaced here: these tests check the decisions, not the machine."""

from __future__ import annotations

import json

import pytest

from xtune import hardware


@pytest.fixture
def probe(monkeypatch, tmp_path):
    """A CPU torch cannot decide for (so the probe runs), a fresh cache folder, and a scripted probe: set
    `readings` to what it measures; `calls` counts the measurements."""
    monkeypatch.setenv("XTUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hardware, "on_cuda", lambda: False)
    monkeypatch.setattr(hardware, "bf16_query", lambda: None)
    monkeypatch.setattr(hardware, "_cpu_info", lambda: ("Test CPU 9000", {"avx512f", "avx512bw"}))

    class Probe:
        readings: list[float] = []
        calls = 0

        def __call__(self) -> float:
            self.calls += 1
            return self.readings.pop(0)

    scripted = Probe()
    monkeypatch.setattr(hardware, "_probe_ratio", scripted)
    hardware.cpu_bf16.cache_clear()
    yield scripted
    hardware.cpu_bf16.cache_clear()


def _cache(tmp_path) -> dict:
    return json.loads((tmp_path / "hardware" / "cpu_bf16.json").read_text(encoding="utf-8"))


def test_the_cache_key_names_the_cpu_model(monkeypatch):
    import torch

    monkeypatch.setattr(hardware, "_cpu_info", lambda: ("Test CPU 9000", {"avx512f", "sse2"}))
    key = hardware.cpu_cache_key()
    assert "Test CPU 9000" in key and torch.__version__ in key
    assert torch.backends.cpu.get_cpu_capability() in key and "avx512f" in key and "sse2" not in key
    monkeypatch.setattr(hardware, "_cpu_info", lambda: ("Test CPU 9001", {"avx512f", "sse2"}))
    assert hardware.cpu_cache_key() != key  # another CPU model does not reuse this one's answer


def test_a_clear_answer_is_measured_twice_then_cached(probe, tmp_path):
    probe.readings = [0.4, 0.45]
    assert hardware.cpu_bf16().native
    assert probe.calls == 2
    entry = _cache(tmp_path)[hardware.cpu_cache_key()]
    assert entry["settled"] and entry["samples"] == [0.4, 0.45]
    hardware.cpu_bf16.cache_clear()  # the next process
    assert hardware.cpu_bf16().native and probe.calls == 2  # from the cache, not measured again


@pytest.mark.parametrize("readings", [[0.85, 0.88], [0.4, 2.5]], ids=["near-threshold", "disagreeing"])
def test_a_doubtful_answer_is_measured_again_next_time(probe, tmp_path, readings):
    probe.readings = list(readings)
    first = hardware.cpu_bf16()
    assert not first.native  # while in doubt the slower reading counts
    assert probe.calls == 2 and not _cache(tmp_path)[hardware.cpu_cache_key()]["settled"]
    hardware.cpu_bf16.cache_clear()
    probe.readings = [0.4, 0.42]
    assert hardware.cpu_bf16().native and probe.calls == 4  # measured again, and now settled
    assert _cache(tmp_path)[hardware.cpu_cache_key()]["settled"]


def test_an_old_single_reading_is_measured_again(probe, tmp_path):
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "cpu_bf16.json").write_text(json.dumps({hardware.cpu_cache_key(): 0.3}))
    probe.readings = [2.0, 2.2]
    assert not hardware.cpu_bf16().native and probe.calls == 2


def test_torch_answer_comes_first(probe, monkeypatch):
    monkeypatch.setattr(hardware, "bf16_query", lambda: hardware.CpuBf16(False, "no bf16 kernels"))
    assert hardware.choose_precision("auto").name == "float32"
    assert probe.calls == 0


@pytest.mark.parametrize("query", [None, hardware.CpuBf16(False, "this CPU has no native bf16: AVX2")])
def test_an_explicit_dtype_skips_the_probe(probe, monkeypatch, query):
    monkeypatch.setattr(hardware, "bf16_query", lambda: query)
    for dtype in ("bfloat16", "bf16", "float32"):
        chosen = hardware.choose_precision(dtype)
        assert (chosen.name, chosen.reason) == (hardware.dtype_name(dtype), "as requested")
    assert probe.calls == 0
    warning = hardware.choose_precision("bfloat16").warning
    assert (warning is None) if query is None else ("slower than in float32" in warning)


def test_the_query_decides_where_torch_knows(monkeypatch):
    import torch

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert hardware.bf16_query().native is False
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(hardware, "_cpu_info", lambda: ("x", {"avx512f", "amx_bf16"}))
    assert hardware.bf16_query().native is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.bf16_query().native is False  # oneDNN is told not to use the bf16 instructions
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(hardware, "_cpu_info", lambda: ("x", {"avx512f", "avx512bw"}))
    assert hardware.bf16_query() is None  # AVX512 without bf16 instructions: only a measurement tells
