"""xtune's preference losses equal TRL 1.16's on a fixed batch of a tiny model: loss, gradients, metrics.

TRL's DPO, KTO and reward losses are computed by real DPOTrainer / KTOTrainer / RewardTrainer objects
(`compute_loss` on their own collators' batches); ORPO and SimPO through ORPOTrainer's and CPOTrainer's own
`get_batch_loss_metrics` code on a stand-in trainer (those trainers cannot be built without tokenizing a data
set the TRL way). Policy and reference differ (the policy's weights are perturbed), and xtune runs both the
unpacked layout (one sequence per row) and the packed one (every pair in one row, positions restarting).
"""

from __future__ import annotations

import copy
import types

import pytest
from test_engine_fixtures import make_assets

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

PAIRS = [([1, 10, 11, 12, 13], [20, 21, 22, 2], [30, 31, 2]), ([1, 40, 41], [50, 2], [60, 61, 62, 63, 2]),
         ([1, 70, 71, 72], [80, 81, 82, 2], [90, 2])]
KL_ANSWERS = [[90, 2], [20, 21, 22, 2], [50, 2]]  # each KTO prompt with another record's answer
LABELS = [True, False, True]
TOL = 1e-5


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, _ = make_assets(tmp_path_factory.mktemp("assets"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.02)
    return model_dir, tokenizer, policy, reference


def xtune_batch(units, packed: bool, unit_labels=None) -> dict:
    """xtune's collated batch for units of (prompt, answer, answer) sequences."""
    from xtune.data.packing import pack_units
    from xtune.data.preference_collate import PreferenceCollator

    sequences = [[(p + a, [-100] * len(p) + a) for a in answers] for p, *answers in units]
    if packed:
        rows = pack_units(sequences, 10_000)
        assert rows["units"] == [[0, 1, 2]] or len(rows["input_ids"]) == 1
        order = rows.pop("units")[0]
        rows = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
    else:
        order = list(range(len(units)))
        rows = [{"input_ids": sum((s[0] for s in unit), []), "labels": sum((s[1] for s in unit), []),
                 "position_ids": sum((list(range(len(s[0]))) for s in unit), [])} for unit in sequences]
    if unit_labels is not None:
        if packed:
            rows[0]["unit_labels"] = [int(unit_labels[i]) for i in order]
        else:
            for row, label in zip(rows, unit_labels, strict=True):
                row["unit_labels"] = [int(label)]
    return PreferenceCollator(pad_id=3, packed=packed)(rows)


def grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(trl_loss, trl_model, ours: dict, our_model, trl_metrics: dict | None = None):
    trl_loss.backward()
    ours["loss"].backward()
    assert abs(float(trl_loss) - float(ours["loss"])) < TOL, (float(trl_loss), float(ours["loss"]))
    expected, got = grads(trl_model), grads(our_model)
    assert expected.keys() == got.keys() and expected
    worst = max(float((expected[k] - got[k]).abs().max()) for k in expected)
    assert worst < TOL, worst
    for key, value in (trl_metrics or {}).items():
        assert abs(float(ours[key]) - float(value)) < 1e-4, (key, float(ours[key]), float(value))


def trl_dpo(assets, tmp_path, policy, reference, peft_config=None, **config):
    """(TRL's DPO loss on PAIRS, the model it ran, its metrics, its state dict from before the step)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    _, tokenizer, _, _ = assets
    data = Dataset.from_dict({"prompt": ["the cat"], "chosen": [" sat"], "rejected": [" ran"]})
    args = DPOConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False, **config)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                         processing_class=tokenizer, peft_config=peft_config)
    trainer.model.train()
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    batch = trainer.data_collator([{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}
                                   for p, c, r in PAIRS])
    loss = trainer.compute_loss(trainer.model, batch)
    return loss, trainer.model, {k: v[-1] for k, v in trainer._metrics["train"].items()}, before


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
@pytest.mark.parametrize("packed", [False, True])
def test_dpo_equals_trl(assets, tmp_path, loss_type, packed):
    from xtune.objectives.dpo import DPO
    from xtune.objectives.reference import Reference

    _, _, policy, reference = assets
    trl_policy, ours = copy.deepcopy(policy), copy.deepcopy(policy)
    loss, trl_model, metrics, _ = trl_dpo(assets, tmp_path, trl_policy, copy.deepcopy(reference), beta=0.3,
                                          loss_type=[loss_type])
    out = DPO(beta=0.3, loss_type=loss_type).loss(ours, xtune_batch(PAIRS, packed),
                                                  Reference("copy", reference))
    wanted = {k: metrics[k] for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies",
                                      "rewards/margins", "logps/chosen", "logps/rejected")}
    assert_same(loss, trl_model, out, ours, wanted)


def test_dpo_with_adapters_off_reference_equals_trl(assets, tmp_path):
    """A new LoRA adapter: TRL's reference is the model with the adapter disabled, and so is xtune's."""
    from peft import LoraConfig, get_peft_model

    from xtune.objectives.dpo import DPO
    from xtune.objectives.reference import Reference

    _, _, _, reference = assets
    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, lora_dropout=0.0)
    loss, trl_model, _, state = trl_dpo(assets, tmp_path, copy.deepcopy(reference), None, peft_config=config,
                                        beta=0.1)
    # TRL's adapter weights in a model of our own (a deep copy of TRL's patched model would still run TRL's)
    ours = get_peft_model(copy.deepcopy(reference), config)
    ours.load_state_dict(state)
    out = DPO(beta=0.1).loss(ours, xtune_batch(PAIRS, True), Reference("adapters_off"))
    assert 0.01 < abs(float(out["rewards/margins"]))  # the adapter moved the policy away from the reference
    assert_same(loss, trl_model, out, ours)


def test_dpo_label_smoothing_is_conservative_dpo(assets):
    """cDPO: TRL 1.16 keeps it in CPOTrainer's sigmoid loss, which on log ratios is DPO's."""
    from trl.experimental.cpo import CPOTrainer

    from xtune.objectives.dpo import DPO
    from xtune.objectives.logps import token_logps
    from xtune.objectives.reference import Reference

    _, _, policy, reference = assets
    ours, theirs = copy.deepcopy(policy), copy.deepcopy(policy)
    batch = xtune_batch(PAIRS, False)
    ref = Reference("copy", reference).sample_logps(theirs, batch)
    ratios = token_logps(theirs, batch).sums() - ref
    cpu = types.SimpleNamespace(device=torch.device("cpu"))
    fake = types.SimpleNamespace(alpha=0.0, loss_type="sigmoid", beta=0.2, label_smoothing=0.15,
                                 simpo_gamma=0.0, accelerator=cpu)
    losses, _, _ = CPOTrainer.cpo_loss(fake, ratios[0::2], ratios[1::2])
    out = DPO(beta=0.2, label_smoothing=0.15).loss(ours, batch, Reference("copy", reference))
    assert_same(losses.mean(), theirs, out, ours)


def cpo_batch() -> dict:
    """The chosen_* / rejected_* tensors ORPO and CPO trainers read (right-padded, prompt labels -100)."""
    out = {}
    for side, k in (("chosen", 1), ("rejected", 2)):
        seqs = [pair[0] + pair[k] for pair in PAIRS]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), 3)
        labels = torch.full((len(seqs), width), -100)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (pair, seq) in enumerate(zip(PAIRS, seqs, strict=True)):
            ids[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq), 1
            labels[i, len(pair[0]):len(seq)] = torch.tensor(pair[k])
        out.update({f"{side}_input_ids": ids, f"{side}_attention_mask": mask, f"{side}_labels": labels})
    return out


def stand_in(trainer_cls, **attrs):
    """A trainer-shaped object whose loss methods are TRL's own (bound), for trainers that need TRL data."""
    fake = types.SimpleNamespace(is_encoder_decoder=False, pad_token_id=3, padding_value=3,
                                 aux_loss_enabled=False,
                                 accelerator=types.SimpleNamespace(device=torch.device("cpu"),
                                                                   gather_for_metrics=lambda x: x),
                                 concatenated_inputs=trainer_cls.concatenated_inputs,
                                 get_batch_logps=trainer_cls.get_batch_logps, **attrs)
    for name in ("concatenated_forward", "odds_ratio_loss", "cpo_loss"):
        if hasattr(trainer_cls, name):
            setattr(fake, name, types.MethodType(getattr(trainer_cls, name), fake))
    return fake


@pytest.mark.parametrize("packed", [False, True])
def test_orpo_equals_trl(assets, packed):
    from trl.experimental.orpo import ORPOTrainer

    from xtune.objectives.cpo import ORPO

    _, _, policy, _ = assets
    ours, theirs = copy.deepcopy(policy), copy.deepcopy(policy)
    loss, metrics = ORPOTrainer.get_batch_loss_metrics(stand_in(ORPOTrainer, beta=0.25), theirs, cpo_batch())
    out = ORPO(beta=0.25, nll_on_prompt=True).loss(ours, xtune_batch(PAIRS, packed))
    assert_same(loss, theirs, out, ours, {"rewards/margins": metrics["rewards/margins"],
                                          "nll": metrics["nll_loss"],
                                          "log_odds_ratio": metrics["log_odds_ratio"]})


@pytest.mark.parametrize("cpo_alpha", [0.0, 0.5])
def test_simpo_equals_trl_cpo_simpo(assets, cpo_alpha):
    from trl.experimental.cpo import CPOTrainer

    from xtune.objectives.cpo import SimPO

    _, _, policy, _ = assets
    ours, theirs = copy.deepcopy(policy), copy.deepcopy(policy)
    fake = stand_in(CPOTrainer, beta=2.0, simpo_gamma=0.8, label_smoothing=0.1, loss_type="simpo", alpha=0.0,
                    cpo_alpha=cpo_alpha)
    loss, metrics = CPOTrainer.get_batch_loss_metrics(fake, theirs, cpo_batch())
    out = SimPO(beta=2.0, simpo_gamma=0.8, label_smoothing=0.1, cpo_alpha=cpo_alpha).loss(
        ours, xtune_batch(PAIRS, True))
    assert_same(loss, theirs, out, ours, {"rewards/chosen": metrics["rewards/chosen"],
                                          "rewards/accuracies": metrics["rewards/accuracies"]})


@pytest.mark.parametrize("packed", [False, True])
def test_kto_equals_trl(assets, tmp_path, packed):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from xtune.objectives.kto import KTO
    from xtune.objectives.reference import Reference

    _, tokenizer, policy, reference = assets
    ours, theirs = copy.deepcopy(policy), copy.deepcopy(policy)
    data = Dataset.from_dict({"prompt": ["the cat", "a dog"], "completion": [" sat", " ran"],
                              "label": [True, False]})
    args = KTOConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False, beta=0.3,
                     desirable_weight=1.0, undesirable_weight=1.5, per_device_train_batch_size=3,
                     train_sampling_strategy="sequential")
    trainer = KTOTrainer(model=theirs, ref_model=copy.deepcopy(reference), args=args, train_dataset=data,
                         processing_class=tokenizer)
    trainer.model.train()
    batch = trainer.data_collator([{"prompt_ids": p, "completion_ids": c, "KL_completion_ids": kl, "label": y}
                                   for (p, c, _), kl, y in zip(PAIRS, KL_ANSWERS, LABELS, strict=True)])
    loss = trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    units = [(p, c, kl) for (p, c, _), kl in zip(PAIRS, KL_ANSWERS, strict=True)]
    out = KTO(beta=0.3, undesirable_weight=1.5).loss(ours, xtune_batch(units, packed, LABELS),
                                                      Reference("copy", reference))
    assert_same(loss, trainer.model, out, ours, {"kl": metrics["kl"],
                                                 "rewards/chosen": metrics["rewards/chosen"],
                                                 "rewards/rejected": metrics["rewards/rejected"]})


@pytest.mark.parametrize("packed", [False, True])
def test_reward_equals_trl(assets, tmp_path, packed):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from xtune.objectives.reward import Reward

    model_dir, tokenizer, _, _ = assets
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1,
                                                               attn_implementation="eager")
    model.config.pad_token_id = tokenizer.pad_token_id
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    data = Dataset.from_dict({"chosen": ["the cat sat"], "rejected": ["the cat ran"]})
    args = RewardConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False,
                        center_rewards_coefficient=0.01)
    trainer = RewardTrainer(model=theirs, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.model.train()
    batch = trainer.data_collator([{"chosen_ids": p + c, "rejected_ids": p + r} for p, c, r in PAIRS])
    loss = trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    out = Reward(center_rewards_coefficient=0.01).loss(ours, xtune_batch(PAIRS, packed))
    assert_same(loss, trainer.model, out, ours, {"rewards/accuracies": metrics["accuracy"],
                                                 "rewards/margins": metrics["margin"]})
