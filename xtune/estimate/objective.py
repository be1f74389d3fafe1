"""What a preference objective adds to a run's memory, beside the policy the SFT estimate already counts.

DPO, ORPO, SimPO, KTO and reward models train on rows of two sequences per example (a pair, or a KTO
sample with its mismatched KL sample): packed rows are 2 x max_length tokens long, unpacked batches hold
2 x batch_size sequences, so the activations and logits are those of twice the tokens. An objective with
a reference model (DPO, KTO, PPO) keeps a frozen copy of the policy's weights when the method trains them
all (full, freeze); adapter methods switch their adapters off instead and precomputed log-probs need no
model at all. PPO's rows are prompts plus `max_new_tokens` generated tokens, and its reward model is a
second set of weights (its own architecture when its config.json is at hand, else the policy's).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectiveCost:
    """How an objective changes the plan: sequences per row or batch, and frozen models held beside it."""

    name: str = "sft"
    sequences: int = 1  # sequences per training example (2 for pairs and KTO units)
    extra_tokens: int = 0  # tokens per sequence beyond max_length (PPO's generated answer)
    reference_copy: bool = False  # a frozen copy of the policy's weights
    reward_model: str = ""  # PPO: the reward model's path ("" none)
    score_head: bool = False  # a reward model: one score per sequence instead of vocabulary logits


def objective_cost(cfg, registry, method) -> ObjectiveCost:
    """The cost of the recipe's `objective` section (SFT's when there is none)."""
    settings = dict(cfg.get("objective") or {})
    name = settings.get("type", "sft")
    if name == "sft":
        return ObjectiveCost()
    entry = registry.objectives.get(name)
    full_weights = not method.uses_peft
    reference = bool(entry.reference) and full_weights and not settings.get("precompute_ref_log_probs")
    if entry.data == "prompts":
        return ObjectiveCost(name, 1, int(settings.get("max_new_tokens") or 0), reference,
                             str(settings.get("reward_model") or ""))
    return ObjectiveCost(name, 2, 0, reference, score_head=entry.head == "score")
