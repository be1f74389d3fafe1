"""xtune's GRPO loss equals TRL 1.16's `GRPOTrainer._compute_loss` on the same prompts, completions,
advantages, old and reference log-probabilities: loss, every gradient and the logged metrics, for every loss
type, with and without the KL term (beta), with clip-higher and a sampling temperature. TRL's trainer is a
real one, built on the tiny model; its loss is computed by its own code (fused LM head included)."""

from __future__ import annotations

import copy

import pytest
from test_engine_fixtures import make_assets

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

PROMPTS = [[1, 10, 11, 12], [1, 40, 41, 42]]  # one length: TRL's forward derives positions from it
COMPLETIONS = [[20, 21, 22, 2], [30, 2], [50, 51, 52, 53], [60, 61, 2]]  # two per prompt; the third is cut
GENERATIONS, LENGTH, TOL = 2, 4, 1e-5
SETTINGS = dict(epsilon=0.2, epsilon_high=0.28, temperature=0.7)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, _ = make_assets(tmp_path_factory.mktemp("assets"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    return model_dir, tokenizer, policy


def inputs() -> dict:
    """TRL's inputs after generation: ids, masks, advantages and the two other policies' log-probs."""
    generator = torch.Generator().manual_seed(1)
    prompt_ids = torch.tensor([p for p in PROMPTS for _ in range(GENERATIONS)])
    completion_ids = torch.zeros(len(COMPLETIONS), LENGTH, dtype=torch.long)
    completion_mask = torch.zeros(len(COMPLETIONS), LENGTH, dtype=torch.long)
    for i, ids in enumerate(COMPLETIONS):
        completion_ids[i, :len(ids)] = torch.tensor(ids)
        completion_mask[i, :len(ids)] = 1
    shift = torch.randn(len(COMPLETIONS), LENGTH, generator=generator) * 0.3  # ratios beyond the clip range
    return {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
            "completion_ids": completion_ids, "completion_mask": completion_mask,
            "advantages": torch.tensor([1.2, -0.7, 0.4, -1.5]),
            "shift": shift, "ref_shift": torch.randn(len(COMPLETIONS), LENGTH, generator=generator) * 0.2,
            "num_items_in_batch": completion_mask.sum()}


def trl_loss(models, tmp_path, loss_type: str, beta: float) -> tuple[float, dict, dict, torch.Tensor]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model_dir, tokenizer, policy = models
    config = GRPOConfig(output_dir=str(tmp_path / "trl"), loss_type=loss_type, beta=beta,
                        max_completion_length=LENGTH, num_generations=GENERATIONS,
                        per_device_train_batch_size=GENERATIONS * len(PROMPTS), report_to=[], use_cpu=True,
                        bf16=False, **SETTINGS)
    trainer = GRPOTrainer(model=copy.deepcopy(policy), reward_funcs=lambda completions, **_: [0.0] *
                          len(completions), args=config, processing_class=tokenizer,
                          train_dataset=Dataset.from_dict({"prompt": ["hello"] * 4}))
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model.train()
    data = inputs()
    with torch.no_grad():  # the policy's own log-probs; the old and reference ones are shifted from them
        ids = torch.cat([data["prompt_ids"], data["completion_ids"]], 1)
        mask = torch.cat([data["prompt_mask"], data["completion_mask"]], 1)
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, LENGTH)
    data["old_per_token_logps"] = logps + data["shift"]
    data["ref_per_token_logps"] = logps + data["ref_shift"]
    loss = trainer._compute_loss(model, data)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return float(loss), grads, metrics, logps


def xtune_loss(models, loss_type: str, beta: float, trl_logps: torch.Tensor):
    from xtune.objectives.grpo import GRPO, Completions

    _, _, policy = models
    model = copy.deepcopy(policy).train()
    objective = GRPO(reward_funcs=["format"], num_generations=GENERATIONS, max_completion_length=LENGTH,
                     beta=beta, loss_type=loss_type, **SETTINGS)
    data = inputs()
    sequences = torch.cat([data["prompt_ids"], data["completion_ids"]], 1)
    attention = torch.cat([data["prompt_mask"], data["completion_mask"]], 1)
    answer_mask = data["completion_mask"].bool()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    args = (sequences, attention, positions, len(PROMPTS[0]), answer_mask)
    with torch.no_grad():
        own, _ = objective.logps(model, *args)
    assert torch.allclose(own * answer_mask, trl_logps * answer_mask, atol=TOL)  # the same log-probs
    stopped = torch.tensor([ids[-1] == 2 for ids in COMPLETIONS])
    part = Completions(*args, loss_mask=answer_mask, old_logps=(trl_logps + data["shift"]) * answer_mask,
                       ref_logps=(trl_logps + data["ref_shift"]) * answer_mask, stopped=stopped,
                       advantages=data["advantages"])
    out = objective.loss(model, {"rollout": part})
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_the_loss_gradients_and_metrics_equal_trl(models, tmp_path, loss_type, beta):
    expected, expected_grads, metrics, logps = trl_loss(models, tmp_path, loss_type, beta)
    out, grads = xtune_loss(models, loss_type, beta, logps)
    assert abs(float(out["loss"]) - expected) < TOL, (float(out["loss"]), expected)
    assert expected_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], atol=TOL, rtol=1e-4), name
    assert abs(float(out["entropy"]) - metrics["entropy"]) < TOL
    for ours, theirs in (("clip_ratio/low_mean", "clip_ratio/low_mean"), ("clip_ratio/high_mean",
                         "clip_ratio/high_mean"), ("clip_ratio/region_mean", "clip_ratio/region_mean")):
        assert abs(float(out[ours]) - metrics[theirs]) < TOL, ours
    assert float(metrics["clip_ratio/region_mean"]) > 0  # the clip range is exercised
    if beta:
        assert abs(float(out["kl"]) - metrics["kl"]) < TOL


def test_group_advantages_weigh_skip_and_scale_as_trl_does():
    """Weighted sum with None as 0, a completion no function scored left out of its group and given 0, and
    the three scalings (TRL's sum_then_normalize), on numbers worked out by hand."""
    from trl.trainer.utils import nanstd

    from xtune.objectives.grpo_loss import group_advantages
    from xtune.objectives.grpo_loss import nanstd as own_nanstd

    nan = float("nan")
    per_function = torch.tensor([[1.0, nan], [0.0, 1.0], [nan, nan], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    weights = torch.tensor([1.0, 0.5])
    advantages, rewards, zero_std = group_advantages(per_function, weights, 2, "group")
    assert torch.allclose(rewards[[0, 1, 3, 4, 5]], torch.tensor([1.0, 0.5, 1.5, 0.0, 1.0]))
    assert torch.isnan(rewards[2])
    spread = 0.5 ** 0.5 * 0.5  # the sample std of (1.0, 0.5)
    assert torch.allclose(advantages[:2], torch.tensor([0.25, -0.25]) / (spread + 1e-4))
    assert advantages[2] == 0 and advantages[3] == 0  # unscorable; alone in its group
    assert torch.allclose(advantages[4:], torch.tensor([-0.5, 0.5]) / (0.5 ** 0.5 + 1e-4))
    none, _, _ = group_advantages(per_function, weights, 2, "none")
    assert torch.allclose(none[[0, 1, 4, 5]], torch.tensor([0.25, -0.25, -0.5, 0.5]))
    batch, _, _ = group_advantages(per_function, weights, 2, "batch")
    assert torch.allclose(batch[4:], torch.tensor([-0.5, 0.5]) / (nanstd(rewards) + 1e-4))
    assert torch.allclose(own_nanstd(rewards), nanstd(rewards))
    assert not zero_std.any()  # the lone scored completion's std is NaN, not 0 (as in TRL's log)
    _, _, flat = group_advantages(torch.ones(4, 1), weights[:1], 2, "group")
    assert flat.all()  # equal rewards in a group: no signal, logged as frac_reward_zero_std
