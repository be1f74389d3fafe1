"""The low-memory methods (issue 28) through `xtune train` on the tiny Llama, with their own generated recipes
(`llama2_7b_chat_{method}_alpaca_e3`, what `xtune list-cfg -p METHOD` lists): each trains, and a run resumed
from its step-2 checkpoint equals the uninterrupted one (BAdam also after a real kill -9); a full-parameter
method exports a full model; PiSSA's adapter is exported as an ordinary LoRA of the original base."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
from test_engine_fixtures import make_assets
from test_engine_train import TRAIN_KILLED_AFTER_STEP_3, clean_env, history, options, train

pytestmark = pytest.mark.integration
PISSA = "llama2_7b_chat_lora_pissa_alpaca_e3"
METHODS = {"lomo": {"accumulative_counts": 1},  # the recipe's own: no clip_grad, no accumulation
           "adalomo": {"accumulative_counts": 1, "method_cfg.clip_grad_norm": 1.0},
           "galore": {"method_cfg.rank": 4, "method_cfg.update_proj_gap": 2},
           "apollo": {"method_cfg.rank": 4, "method_cfg.update_proj_gap": 2},
           "badam": {"method_cfg.switch_interval": 2},
           "lisa": {"method_cfg.activated_layers": 1, "method_cfg.step_interval": 3}}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


def recipe(method: str) -> str:
    return f"llama2_7b_chat_{method}_alpaca_e3"


def method_options(assets, method: str, **extra) -> list[str]:
    return options(*assets, **{"lr": 1e-2, **METHODS[method], **extra})


def resumed_copy(work_dir, tmp_path, opts, method: str) -> list[float]:
    """The run's losses when it is continued from its step-2 checkpoint in a copy of its work dir (what a
    kill after that checkpoint leaves)."""
    copy = tmp_path / "resumed"
    shutil.copytree(work_dir, copy, ignore=shutil.ignore_patterns("iter_4.pth", "hf", "loss_history.json"))
    (copy / "last_checkpoint").write_text("iter_2.pth")
    assert train(copy, opts, "--resume", "auto", recipe=recipe(method)) == 0
    return history(copy)


# Through the engine: the fused update (LOMO), a projected optimizer's checkpointed state (GaLore) and a
# switching one (LISA here, BAdam below). AdaLomo's and APOLLO's state round trips are in
# tests/test_lowmem_methods.py; their engine runs are opt-in (slow) to keep CI short.
@pytest.mark.parametrize("method", ["lomo", "galore", "lisa", pytest.param("adalomo", marks=pytest.mark.slow),
                                    pytest.param("apollo", marks=pytest.mark.slow)])
def test_method_trains_and_resumes_exactly(assets, tmp_path, method):
    opts = method_options(assets, method)
    work = tmp_path / "run"
    assert train(work, opts, recipe=recipe(method)) == 0
    losses = history(work)
    assert len(losses) == 4 and losses[-1] != losses[0]
    resumed = resumed_copy(work, tmp_path, opts, method)
    assert max(abs(a - b) for a, b in zip(resumed, losses, strict=True)) < 1e-5, (losses, resumed)


def test_badam_resumes_exactly_after_kill_9_and_exports_a_full_model(assets, tmp_path):
    from safetensors.torch import load_file

    opts = method_options(assets, "badam", export_hf=True)
    full = tmp_path / "full"
    assert train(full, opts, recipe=recipe("badam")) == 0
    killed = tmp_path / "killed"
    argv = ["train", recipe("badam"), "--work-dir", str(killed), "--cfg-options", *opts]
    proc = subprocess.run([sys.executable, "-c", TRAIN_KILLED_AFTER_STEP_3, *argv], capture_output=True,
                          text=True, env=clean_env(), timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert train(killed, opts, "--resume", "auto", recipe=recipe("badam")) == 0
    assert max(abs(a - b) for a, b in zip(history(killed), history(full), strict=True)) < 1e-5
    # BAdam trained the layers in turn: every weight is in the checkpoint and in the exported model
    trained = load_file(str(full / "iter_4.pth" / "model.safetensors"))
    exported = load_file(str(full / "hf" / "model.safetensors"))
    assert len(trained) == len(exported) > 10
    for name, tensor in exported.items():
        key = next(k for k in trained if k.endswith(name))
        assert (trained[key] - tensor).abs().max() == 0, name
    assert json.loads((full / "hf" / "xtune_info.json").read_text())["method"] == "badam"


def test_pissa_adapter_exports_as_lora_of_the_original_base(assets, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from xtune.checkpoint.read import read_checkpoint
    from xtune.export.pth_to_hf import load_trained_weights
    from xtune.models.build import build_trainable
    from xtune.plan import resolve_plan
    from xtune.plugins import get_registry
    from xtune.recipe.load import load_recipe
    from xtune.recipe_files import resolve_recipe

    model_dir, _ = assets
    opts = options(*assets, **{"method_cfg.r": 4, "method_cfg.lora_dropout": 0.0, "lr": 5e-2, "max_steps": 3,
                               "export_hf": True})
    work = tmp_path / "pissa"
    assert train(work, opts, recipe=PISSA) == 0
    config = json.loads((work / "hf" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # 2r: trained minus initial adapters
    ids = torch.tensor([[5, 17, 40, 99, 120, 7]])
    # the model as trained: the rebuilt residual base with the checkpoint's adapters
    registry = get_registry()
    cfg = load_recipe(resolve_recipe(PISSA, registry), opts)
    trained = build_trainable(cfg, registry, resolve_plan(cfg, registry), for_export=True).model
    weights = read_checkpoint(str(work / "iter_3.pth")).state_dict
    load_trained_weights(trained, weights, source="iter_3.pth", recipe=PISSA)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    exported = PeftModel.from_pretrained(base, str(work / "hf"))
    with torch.no_grad():
        want, got = trained(input_ids=ids).logits, exported(input_ids=ids).logits
        untouched = AutoModelForCausalLM.from_pretrained(str(model_dir))(input_ids=ids).logits
    assert (want - untouched).abs().max() > 1e-3  # it trained
    assert (want - got).abs().max() < 1e-4
