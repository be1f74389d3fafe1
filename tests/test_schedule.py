"""The learning-rate schedule counts optimizer steps: the same curve for any accumulative_counts, the peak
right after warm-up, and the precision `auto` picks from the hardware."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from xtune.schedule import Schedule


def lrs_per_optimizer_step(accumulation: int, steps: int, kind: str = "cosine", warmup_ratio: float = 0.1):
    """The lr each optimizer step runs at, with mmengine's real schedulers laid out by xtune and advanced
    by the training loop's `step_schedulers` (once per optimizer step, whatever the accumulation)."""
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.optim.scheduler import ConstantLR, CosineAnnealingLR, LinearLR

    from xtune.engine.loop import XtuneTrainLoop
    from xtune.engine.optim import param_schedulers

    schedule = Schedule(accumulation, steps * accumulation)
    classes = {"LinearLR": LinearLR, "CosineAnnealingLR": CosineAnnealingLR, "ConstantLR": ConstantLR}
    optimizer = OptimWrapper(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    schedulers = [classes[c.pop("type")](optimizer, **c)
                  for c in param_schedulers(dict(type=kind, warmup_ratio=warmup_ratio), schedule)]
    loop = SimpleNamespace(runner=SimpleNamespace(param_schedulers=schedulers))
    out = []
    for _ in range(schedule.max_steps):
        out.append(optimizer.param_groups[0]["lr"])
        XtuneTrainLoop.step_schedulers(loop)
    return out


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_the_same_lr_at_every_optimizer_step_for_any_accumulation(kind):
    one = lrs_per_optimizer_step(1, 30, kind)
    for accumulation in (2, 8, 16):
        assert lrs_per_optimizer_step(accumulation, 30, kind) == pytest.approx(one, rel=1e-9)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_three_steps_run_at_the_peak_and_then_decay():
    """The issue's 3-step run with 8 accumulated micro-batches ran at 1.5e-4, 3.8e-5 and ~0 when the
    schedule advanced per micro-batch; per optimizer step it is peak, 0.75 x peak, 0.25 x peak."""
    lrs = lrs_per_optimizer_step(8, 3, "cosine", warmup_ratio=0.03)
    assert lrs == pytest.approx([0.1, 0.075, 0.025], rel=1e-6)
    warm = lrs_per_optimizer_step(8, 100, "cosine", warmup_ratio=0.05)
    assert warm[0] < 0.01 and max(warm) == pytest.approx(0.1) and warm.index(max(warm)) <= 5


@pytest.mark.integration
def test_a_real_run_logs_identical_lrs_for_accumulation_1_and_4(tmp_path):
    from test_engine_fixtures import make_assets

    from xtune.cli.main import main

    model_dir, data = make_assets(tmp_path / "assets")
    runs = {}
    for acc in (1, 4):
        wd = tmp_path / f"acc{acc}"
        options = [f"pretrained_model_name_or_path={model_dir}", f"data_path={data}", "max_length=64",
                   "batch_size=1", f"accumulative_counts={acc}", "max_steps=5", "save_steps=0",
                   "evaluation_inputs=[]", "export_hf=False", "warmup_ratio=0.4", "lr=1e-3", "log_interval=1"]
        assert main(
            ["train", "llama2_7b_lora_alpaca_e3", "--work-dir", str(wd), "--cfg-options", *options]) == 0
        runs[acc] = [h["lr"] for h in json.loads((wd / "loss_history.json").read_text())["train"]]
    assert len(runs[1]) == len(runs[4]) == 5
    assert runs[4] == pytest.approx(runs[1], rel=1e-9)
    assert max(runs[1]) == pytest.approx(1e-3, rel=1e-6)


AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # how an AVX2-only CPU looks to torch


def precision_in(env: dict, requested: str = "auto") -> str:
    code = ("from xtune.hardware import choose_precision\n"
            f"p = choose_precision({requested!r})\nprint(p)\nprint(p.warning)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout


@pytest.mark.integration
def test_an_avx2_cpu_trains_in_float32_and_says_why():
    import torch

    if torch.cuda.is_available() or "AVX" not in torch.backends.cpu.get_cpu_capability():
        pytest.skip("needs an x86 CPU (the AVX2-only case is emulated through torch's and oneDNN's ISA caps)")
    out = precision_in(AVX2)
    assert "precision float32 (this CPU has no native bf16: AVX2" in out
    slow = precision_in(AVX2, "bfloat16")
    assert "precision bfloat16 (as requested)" in slow and "slower than in float32" in slow


def test_native_bf16_is_chosen_where_the_cpu_has_it():
    import torch

    from xtune.hardware import choose_precision, cpu_bf16

    if torch.cuda.is_available() or not cpu_bf16().native:
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 / AMX): the bf16 path is tested elsewhere")
    assert choose_precision("auto").name == "bfloat16"
    assert "natively" in choose_precision("auto").reason
