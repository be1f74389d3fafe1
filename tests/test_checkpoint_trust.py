"""Opening someone else's checkpoint runs no code (docs/training.md, "What xtune trusts").

Crafted files whose pickle would create a marker file (os.system, subprocess, builtins.exec, and a getattr
chain through a class mmengine checkpoints need) are refused by `convert pth_to_hf`, `train --resume`,
`convert merge` and `chat` with one `Error:` line and exit 2, and the marker never appears; xtune's own
checkpoints (safetensors + JSON), the older pickled ones and DeepSpeed's still load; `--trust-checkpoint`
opens a pickle deliberately.
"""

from __future__ import annotations

import json
import shutil

import pytest
from crafted_pickles import payloads, write_torch_file
from test_bad_input import RECIPE, error, opts
from test_engine_fixtures import make_assets

from xtune.cli.main import main

ATTACKS = ["os.system", "subprocess", "exec", "getattr chain"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def trained(assets, tmp_path_factory):
    """A 2-step LoRA run with its exported adapter (WORK_DIR/hf)."""
    wd = tmp_path_factory.mktemp("run") / "wd"
    options = opts(*assets, export_hf=True)
    assert main(["train", RECIPE, "--work-dir", str(wd), "--cfg-options", *options]) == 0
    return wd


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_payloads_are_real_and_the_restricted_loader_refuses_them(tmp_path, attack):
    import torch

    from xtune.checkpoint.trust import load_pickled
    from xtune.errors import UsageError

    marker = tmp_path / "marker"
    crafted = write_torch_file(tmp_path / "iter_2.pth", payloads(marker)[attack])
    with pytest.raises(UsageError, match="needs more than xtune's restricted loader allows") as refused:
        load_pickled(crafted)
    assert str(crafted) in str(refused.value) and "--trust-checkpoint" in str(refused.value)
    assert not marker.exists()
    try:  # the same file does run its code when fully unpickled: the test above cannot pass vacuously
        torch.load(crafted, weights_only=False)
    except Exception:  # noqa: BLE001 - the payload's return value is no checkpoint
        pass
    assert marker.exists()


def _deepspeed_folder(root, program):
    """A DeepSpeed checkpoint folder whose model states file carries the payload."""
    folder = root / "iter_2.pth"
    write_torch_file(folder / "mp_rank_00_model_states.pt", program)
    write_torch_file(folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt", b"}")  # an empty dict
    return folder


@pytest.mark.integration
@pytest.mark.parametrize("attack", ATTACKS)
def test_pth_to_hf_and_resume_refuse_crafted_files_and_folders(assets, trained, tmp_path, capsys, attack):
    marker = tmp_path / "marker"
    program = payloads(marker)[attack]
    crafted = [write_torch_file(tmp_path / "file" / "iter_2.pth", program),
               _deepspeed_folder(tmp_path / "ds", program)]
    for checkpoint in crafted:
        out = tmp_path / "out"
        assert main(["convert", "pth_to_hf", RECIPE, str(checkpoint), str(out)]) == 2
        assert "needs more than xtune's restricted loader allows" in error(capsys) and not out.exists()
        wd = tmp_path / "wd"
        deepspeed = ["--deepspeed", "zero2"] if checkpoint.is_dir() else []
        assert main(["train", RECIPE, "--work-dir", str(wd), "--resume", str(checkpoint), *deepspeed,
                     "--cfg-options", *opts(*assets, max_steps=4)]) == 2
        line = error(capsys)
        assert "--resume:" in line and "--trust-checkpoint" in line and str(checkpoint) in line
        assert not list(wd.glob("iter_*"))
    assert not marker.exists()


@pytest.mark.integration
def test_merge_and_chat_refuse_crafted_weight_files(assets, trained, tmp_path, capsys):
    marker = tmp_path / "marker"
    program = payloads(marker)["os.system"]
    adapter = tmp_path / "adapter"
    shutil.copytree(trained / "hf", adapter)
    (adapter / "adapter_model.safetensors").unlink()
    write_torch_file(adapter / "adapter_model.bin", program)
    base = tmp_path / "base"
    shutil.copytree(assets[0], base)
    for weights in base.glob("*.safetensors"):
        weights.unlink()
    write_torch_file(base / "pytorch_model.bin", program)
    commands = [["convert", "merge", str(assets[0]), str(adapter), str(tmp_path / "merged")],
                ["convert", "merge", str(base), str(trained / "hf"), str(tmp_path / "merged")],
                ["chat", str(assets[0]), "--adapter", str(adapter), "--prompt", "hi",
                 "--max-new-tokens", "2"],
                ["chat", str(base), "--prompt", "hi", "--max-new-tokens", "2"]]
    for argv in commands:
        assert main(argv) == 2, argv
        assert "restricted loader" in error(capsys)
    assert not marker.exists() and not (tmp_path / "merged").exists()


@pytest.mark.integration
def test_trust_checkpoint_opens_a_pickle_deliberately(assets, trained, tmp_path, capsys):
    marker = tmp_path / "marker"
    crafted = write_torch_file(tmp_path / "iter_2.pth", payloads(marker)["os.system"])
    out = tmp_path / "out"
    assert main(["convert", "pth_to_hf", RECIPE, str(crafted), str(out), "--trust-checkpoint"]) == 2
    assert marker.exists()  # the user asked for it; the file then holds no checkpoint: still one Error line
    assert "holds a int, not a state dict" in error(capsys)


@pytest.mark.integration
def test_an_older_pickled_checkpoint_still_resumes_and_converts(assets, trained, tmp_path, caplog):
    """The pickled format earlier runs wrote (HistoryBuffer, numpy scalars, getattr) reads through the
    allow-list and resumes to the same losses as the new format."""
    import torch

    from xtune.checkpoint.store import read_store

    old = tmp_path / "old" / "iter_2.pth"
    old.parent.mkdir()
    torch.save(read_store(trained / "iter_2.pth"), old)
    losses = {}
    for name, checkpoint in (("old", old), ("new", trained / "iter_2.pth")):
        wd = tmp_path / name / "wd"
        assert main(["train", RECIPE, "--work-dir", str(wd), "--resume", str(checkpoint), "--cfg-options",
                     *opts(*assets, max_steps=4, save_steps=4)]) == 0
        losses[name] = [h["loss"] for h in json.loads((wd / "loss_history.json").read_text())["train"]]
    assert losses["old"] == losses["new"] and len(losses["new"]) == 4
    assert "older pickled checkpoint format" in caplog.text
    assert main(["convert", "pth_to_hf", RECIPE, str(old), str(tmp_path / "adapter")]) == 0


def test_the_store_keeps_every_kind_of_entry_a_checkpoint_holds(tmp_path):
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    from xtune.checkpoint.store import read_store, read_store_state, write_store

    weight = torch.randn(4, 4)
    checkpoint = {"meta": {"iter": 3, "nan": float("nan"), "$odd": 1},
                  "state_dict": {"a.weight": weight, "tied.weight": weight, "view": weight.t()},
                  "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                                "param_groups": [{"betas": (0.9, 0.999), "params": [0]}]},
                  "message_hub": {"log_scalars": {"train/loss": HistoryBuffer([2.0, 1.5], [1, 1])},
                                  "runtime_info": {"eta": np.float64(1.5)}},
                  "xtune_rng": {"python": (3, tuple(range(5)), None),
                                "numpy": ("MT19937", np.arange(4, dtype=np.uint32), 624, 0, 0.0)}}
    folder = tmp_path / "iter_3.pth"
    write_store(checkpoint, folder)
    back = read_store(folder)
    assert torch.equal(back["state_dict"]["tied.weight"], weight) and torch.equal(back["state_dict"]["view"],
                                                                                  weight.t())
    assert back["optimizer"]["state"][0]["step"].item() == 3.0 and back["optimizer"]["param_groups"][0][
        "betas"] == (0.9, 0.999)
    assert back["message_hub"]["log_scalars"]["train/loss"].mean() == 1.75
    assert back["message_hub"]["runtime_info"]["eta"] == 1.5 and back["meta"]["$odd"] == 1
    assert back["xtune_rng"]["python"] == (3, (0, 1, 2, 3, 4), None)
    assert back["xtune_rng"]["numpy"][1].dtype == np.uint32 and back["xtune_rng"]["numpy"][1].tolist() == [
        0, 1, 2, 3]
    assert read_store_state(folder)["meta"]["iter"] == 3  # without loading a tensor
    with pytest.raises(TypeError, match="checkpoint entry '/meta/when'"):
        write_store({"meta": {"when": object()}}, tmp_path / "bad")


def test_resume_auto_reads_only_the_work_dir_it_was_given(tmp_path, caplog):
    """A copied work dir (cp -r WD WD2) whose pointer still names WD's checkpoints resumes from its own."""
    from xtune.checkpoint.layout import find_resume_checkpoint

    original, copy = tmp_path / "wd", tmp_path / "wd2"
    for folder, steps in ((original, (2, 4)), (copy, (2,))):
        for step in steps:
            (folder / f"iter_{step}.pth").mkdir(parents=True)
    (copy / "last_checkpoint").write_text(str(original / "iter_4.pth"))  # absolute, as older runs wrote
    assert find_resume_checkpoint("auto", copy) == str(copy / "iter_2.pth")
    assert "outside this work dir" in caplog.text
    (copy / "last_checkpoint").write_text("iter_2.pth")  # relative, as runs write it now
    assert find_resume_checkpoint("auto", copy) == str(copy / "iter_2.pth")


@pytest.mark.integration
def test_a_copied_work_dir_resumes_from_its_own_checkpoint(assets, trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    assert (copy / "last_checkpoint").read_text() == "iter_2.pth"
    assert main(["train", RECIPE, "--work-dir", str(copy), "--resume", "auto", "--cfg-options",
                 *opts(*assets, max_steps=3, save_steps=1)]) == 0
    assert (copy / "iter_3.pth").is_dir() and not (trained / "iter_3.pth").exists()
