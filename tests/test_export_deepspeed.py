"""A DeepSpeed ZeRO checkpoint folder converts like an mmengine `.pth` file.

mmengine's DeepSpeedStrategy saves `WORK_DIR/iter_N.pth/` with `engine.save_checkpoint(work_dir,
tag='iter_N.pth', client_state=..., exclude_frozen_parameters=True)`. The helper below does exactly that
in a subprocess (single-process gloo group, no JIT-compiled ops) for ZeRO-2 and ZeRO-3, after one
optimizer step so that the saved weights differ from the initial ones, and records the gathered
trained tensors; the converted adapter must hold those tensors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from test_export_helpers import RECIPE, recipe_options, tiny_model_dir

from xtune.cli.main import main

pytestmark = pytest.mark.integration

_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1",
                      DS_ACCELERATOR="cpu")
    import deepspeed
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")
    from mmengine.logging import MessageHub
    from pathlib import Path
    from test_export_helpers import trained_lora_model

    class Wrapper(torch.nn.Module):  # the engine's CausalLMModel: the LLM lives under `llm`
        def __init__(self, llm):
            super().__init__()
            self.llm = llm

        def forward(self, input_ids):
            return self.llm(input_ids=input_ids, labels=input_ids).loss

    base, work_dir = Path({base!r}), Path({work_dir!r})
    for stage in (2, 3):
        model = Wrapper(trained_lora_model(base)).train()
        config = dict(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1,
                      zero_optimization=dict(stage=stage), steps_per_print=10**9,
                      optimizer=dict(type="AdamW", params=dict(lr=0.05, torch_adam=True)))
        trainable = [p for p in model.parameters() if p.requires_grad]
        engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=config)
        loss = engine(torch.tensor([[1, 5, 9, 30, 77, 120, 2]]))
        engine.backward(loss)
        engine.step()
        hub = MessageHub(name=f"ds-{{stage}}")
        hub.update_scalar("train/loss", float(loss))
        out = work_dir / f"zero{{stage}}"
        state = dict(meta=dict(seed=0), message_hub=hub.state_dict())
        engine.save_checkpoint(str(out), tag="iter_1.pth", client_state=state, save_latest=False,
                               exclude_frozen_parameters=True)
        named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters([p for _, p in named]):
            trained = {{n[len("llm."):]: p.detach().clone() for n, p in named}}
        torch.save(trained, out / "expected.pt")
        initial = dict(trained_lora_model(base).named_parameters())
        moved = max((p - initial[n]).abs().max().item() for n, p in trained.items())
        print(f"zero{{stage}} moved {{moved:.4f}}")
""")


@pytest.fixture(scope="module")
def zero_checkpoints(tmp_path_factory):
    import socket

    root = tmp_path_factory.mktemp("zero")
    base = tiny_model_dir(root / "base")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = _SCRIPT.format(tests=str(__import__("pathlib").Path(__file__).parent), port=port, base=str(base),
                            work_dir=str(root))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    moved = dict(line.split(" moved ") for line in result.stdout.splitlines() if " moved " in line)
    assert set(moved) == {"zero2", "zero3"} and all(float(v) > 1e-3 for v in moved.values()), result.stdout
    return root, base


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_checkpoint_folder_converts_to_the_trained_adapter(zero_checkpoints, stage):
    import torch
    from safetensors.torch import load_file

    root, base = zero_checkpoints
    folder = root / f"zero{stage}" / "iter_1.pth"
    assert folder.is_dir()
    out = root / f"adapter{stage}"
    assert (
        main(
            ["convert", "pth_to_hf", RECIPE, str(folder), str(out), "--cfg-options",
             *recipe_options(base)]) == 0)
    saved = load_file(out / "adapter_model.safetensors")
    expected = torch.load(root / f"zero{stage}" / "expected.pt")
    assert len(saved) == len(expected)
    for name, tensor in expected.items():
        key = name.replace(".default.", ".")
        assert torch.allclose(saved[key].float(), tensor.float(), atol=1e-6), name
    assert "optimizer steps | 1" in (out / "README.md").read_text()


def test_a_folder_that_is_not_a_deepspeed_checkpoint_exits_2(zero_checkpoints, capsys):
    root, base = zero_checkpoints
    assert (
        main(
            ["convert", "pth_to_hf", RECIPE, str(base), str(root / "nope"), "--cfg-options",
             *recipe_options(base)]) == 2)
    assert "not a DeepSpeed checkpoint" in capsys.readouterr().err
