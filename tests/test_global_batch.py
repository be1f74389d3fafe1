"""The loss of a global batch does not depend on how it is split (`xtune.objectives.units`), checked on the
objectives themselves without processes: each micro-batch's loss with the update's share adds up to the
loss of the whole batch in one piece, for SFT and for every preference objective that counts units; and
the per-micro-batch means that xtune averaged before do not (so the data below would show the bug). Also
the refusals of a resume with another layout, and how the launcher reports a failed process."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from xtune.data.tokenize import IGNORE_INDEX  # noqa: E402
from xtune.objectives.units import Share  # noqa: E402


@pytest.fixture(scope="module")
def llm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows of very different answer lengths (a 2-token answer beside a 30-token one)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt, answer = rng.randint(3, 8), [2, 30, 5, 17, 9, 3][i % 6]
        ids = [rng.randint(4, 63) for _ in range(prompt + answer)]
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return rows


def pair_rows(n: int, seed: int = 1, kto: bool = False) -> list[dict]:
    """Preference rows: (chosen, rejected) sequences of different lengths, positions restarting at 0."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ids, labels, positions = [], [], []
        for answer in ([3, 25, 8, 14][i % 4], [12, 4, 20, 6][i % 4]):
            prompt = rng.randint(3, 6)
            seq = [rng.randint(4, 63) for _ in range(prompt + answer)]
            ids += seq
            labels += [IGNORE_INDEX] * prompt + seq[prompt:]
            positions += list(range(len(seq)))
        row = {"input_ids": ids, "labels": labels, "position_ids": positions}
        if kto:
            row["unit_labels"] = [i % 3 != 0]
        rows.append(row)
    return rows


def split_loss(objective, llm, batches, reference=None) -> float:
    """Sum of the micro-batches' losses, each with the share of the whole update."""
    counts = [objective.units(b) for b in batches]
    share = Share({k: sum(c[k] for c in counts) for k in counts[0]})
    return sum(float(objective.loss(llm, b, reference, share=share)["loss"]) for b in batches)


def mean_of_means(objective, llm, batches, reference=None) -> float:
    return sum(float(objective.loss(llm, b, reference)["loss"]) for b in batches) / len(batches)


def test_sft_loss_of_micro_batches_adds_up_to_the_whole_batch(llm):
    from xtune.data.collate import Collator
    from xtune.objectives.sft import SFT

    rows, collate, sft = sft_rows(6), Collator(0, packed=False), SFT()
    whole = float(sft.loss(llm, collate(rows))["loss"])
    for cut in ([2, 4], [1, 5], [3, 3]):  # micro-batches of other sizes and paddings
        parts = [collate(rows[:cut[0]]), collate(rows[cut[0]:])]
        assert split_loss(sft, llm, parts) == pytest.approx(whole, rel=1e-5)
    old = mean_of_means(sft, llm, [collate(rows[:1]), collate(rows[1:])])
    assert abs(old - whole) > 1e-3  # what averaging micro-batch means trained instead


@pytest.mark.parametrize("name", ["dpo", "orpo", "orpo_prompt", "simpo", "cpo_simpo", "kto", "ipo"])
def test_preference_losses_of_micro_batches_add_up_to_the_whole_batch(llm, name):
    from xtune.data.preference_collate import PreferenceCollator
    from xtune.objectives.cpo import ORPO, SimPO
    from xtune.objectives.dpo import DPO
    from xtune.objectives.kto import KTO
    from xtune.objectives.reference import Reference

    objective = {"dpo": DPO(), "orpo": ORPO(beta=0.5), "orpo_prompt": ORPO(nll_on_prompt=True),
                 "simpo": SimPO(), "cpo_simpo": SimPO(cpo_alpha=1.0), "kto": KTO(),
                 "ipo": DPO(loss_type="ipo")}[name]
    kto = name == "kto"
    rows = pair_rows(4, kto=kto)
    reference = None
    if name in ("dpo", "ipo", "kto"):  # precomputed reference log-probs: fixed numbers per sample
        rng = random.Random(3)
        for row in rows:
            row["ref_logps"] = [rng.uniform(-60.0, -10.0) for _ in range(2)]
        reference = Reference("precomputed")
    for packed in (False, True):
        collate = PreferenceCollator(0, packed=packed)
        whole = float(objective.loss(llm, collate(rows), reference)["loss"])
        parts = [collate(rows[:1]), collate(rows[1:])]
        if kto:  # KTO's KL reference point is per micro-batch (as TRL's): only one cut keeps it
            parts = [collate(rows)]
        assert split_loss(objective, llm, parts, reference) == pytest.approx(whole, rel=1e-5), packed


def test_units_are_counted_before_the_forward_pass():
    from xtune.data.collate import Collator
    from xtune.data.preference_collate import PreferenceCollator
    from xtune.objectives.cpo import ORPO
    from xtune.objectives.sft import SFT

    rows = sft_rows(3)
    assert SFT().units(Collator(0, packed=False)(rows)) == {"tokens": 2 + 30 + 5}
    pairs = pair_rows(2)
    units = ORPO().units(PreferenceCollator(0, packed=True)(pairs))
    assert units == {"pairs": 2, "chosen_tokens": 3 + 25}


# ------------------------------------------------------------------------------------------ resume
def test_a_resume_with_another_layout_is_refused_in_one_line(tmp_path):
    import json

    from xtune.checkpoint.run_layout import SIDECAR, RunLayout, check_resume_layout
    from xtune.errors import UsageError

    folder = tmp_path / "iter_8.pth"  # a DeepSpeed checkpoint folder of a 2-process ZeRO run
    folder.mkdir()
    (folder / SIDECAR).write_text(json.dumps(RunLayout(2, 2, 1, True).to_dict()))
    check_resume_layout(folder, RunLayout(2, 1, 2, True))  # same processes, same global batch: continues
    with pytest.raises(UsageError, match="written by 2 processes and this run has 1"):
        check_resume_layout(folder, RunLayout(1, 2, 2, True))
    with pytest.raises(UsageError, match="was written with DeepSpeed and this run is not using it"):
        check_resume_layout(folder, RunLayout(2, 2, 1, False))
    with pytest.raises(UsageError, match=r"global batch of 4 rows \(2 x 1 accumulation x 2 processes\); this "
                                         r"run.s is 8 rows.*set accumulative_counts=1 to keep 4 rows"):
        check_resume_layout(folder, RunLayout(2, 2, 2, True))
    old = tmp_path / "old.pth"  # a folder without the record: its shard count tells the processes
    old.mkdir()
    for rank in range(4):
        (old / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(b"")
    with pytest.raises(UsageError, match="written by 4 processes"):
        check_resume_layout(old, RunLayout(2, 1, 1, True))


# ------------------------------------------------------------------------------------------ launcher
class _Failure:
    def __init__(self, exitcode: int):
        self.exitcode = exitcode

    def signal_name(self) -> str:
        import signal

        return signal.Signals(-self.exitcode).name


def test_the_launcher_reports_the_first_process_error(tmp_path, capsys):
    import json

    from xtune.engine.launch import _report

    (tmp_path / "rank1.json").write_text(json.dumps({"rank": 1, "message": "bad row 7", "exit_code": 2,
                                                     "time": 10.0}))
    (tmp_path / "rank0.json").write_text(json.dumps({"rank": 0, "message": "Connection closed by peer",
                                                     "exit_code": 1, "time": 11.5}))
    assert _report(tmp_path, {0: _Failure(1), 1: _Failure(2)}) == 2
    assert capsys.readouterr().err.strip() == "Error: process 1: bad row 7"
    # a process killed from outside leaves no record; the others' lost connections are not the cause
    (tmp_path / "rank1.json").unlink()
    assert _report(tmp_path, {0: _Failure(1), 1: _Failure(-9)}) == 137
    assert "Error: process 1 was killed by SIGKILL" in capsys.readouterr().err


def test_estimate_counts_sequence_parallel_shards():
    from xtune.estimate.architecture import Architecture
    from xtune.estimate.memory import Plan, activation_bytes, logits_bytes

    arch = Architecture(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
                        num_kv_heads=32, head_dim=128, vocab_size=32000)
    whole, shard = Plan(seq_len=32768), Plan(seq_len=32768, sequence_parallel=4)
    for checkpointing in (False, True):
        assert activation_bytes(arch, shard, checkpointing)[0] == pytest.approx(
            activation_bytes(arch, whole, checkpointing)[0] / 4)
    assert logits_bytes(arch, shard) == pytest.approx(logits_bytes(arch, whole) / 4)


def test_sequence_parallel_settings_are_checked():
    from mmengine.config import Config

    from xtune.engine.sequence_parallel import check_layout, recipe_problems
    from xtune.errors import ConfigError

    cfg = Config(dict(sequence_parallel_size=2, train_dataset=dict(pack_to_max_length=False),
                      objective=dict(type="dpo")))
    assert recipe_problems(cfg) == [
        "sequence_parallel_size > 1 needs pack_to_max_length=True (rows are cut along the sequence)",
        "sequence_parallel_size > 1 trains objective 'sft' only, not 'dpo'"]
    check_layout(2, 4, heads=32, kv_heads=8)
    with pytest.raises(ConfigError, match="does not divide the 3 processes.*does not divide the model's 2 "
                                          "key-value heads"):
        check_layout(4, 3, heads=32, kv_heads=2)


def test_long_context_recipes_ask_for_sequence_parallel_and_one_process_is_refused(tmp_path, capsys):
    from xtune.cli.main import main
    from xtune.plan import resolve_plan
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    registry = get_registry()
    name = "internlm2_chat_7b_qlora_long_alpaca_sp4_e1"
    assert registry.recipes.get(name).sequence_parallel == 4
    cfg = load_recipe(resolve_recipe(name, registry), [], {})
    plan = resolve_plan(cfg, registry, recipe=name)
    assert plan.training.sequence_parallel == 4 and plan.data["max_length"] == 32768
    folder = tmp_path / "model"  # a local config with InternLM2-7B's heads: no download needed to refuse
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "num_attention_heads": 32, '
                                        '"num_key_value_heads": 8}')
    from xtune.engine.sequence_parallel import check_layout, model_heads

    assert model_heads(cfg) == {}  # a hub id: nothing local to read
    cfg.model["pretrained_model_name_or_path"] = str(folder)
    check_layout(4, 8, **model_heads(cfg))
    assert main(["estimate", name]) == 0
    # one process: refused before a model or data set is fetched
    assert main(["train", name, "--work-dir", str(tmp_path / "wd"), "--cfg-options",
                 f"pretrained_model_name_or_path={folder}"]) == 2
    assert "sequence_parallel_size=4 does not divide the 1 processes" in capsys.readouterr().err
    assert not (tmp_path / "wd").exists()
