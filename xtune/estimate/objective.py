"""What a preference objective adds to a run's memory, beside the policy the SFT estimate already counts.

DPO, ORPO, SimPO, KTO and reward models train on rows of two sequences per example (a pair, or a KTO
sample with its mismatched KL sample): packed rows are 2 x max_length tokens long, unpacked batches hold
2 x batch_size sequences, so the activations and logits are those of twice the tokens. An objective with
a reference model (DPO, KTO, PPO) keeps a frozen copy of the policy's weights when the method trains them
all (full, freeze); adapter methods switch their adapters off instead and precomputed log-probs need no
model at all. PPO's rows are prompts plus `max_new_tokens` generated tokens, and its reward model is a
second set of weights (its own architecture when its config.json is at hand, else the policy's).
GRPO answers each prompt `num_generations` times: its rows are batch_size x num_generations sequences of
prompt + `max_completion_length` tokens, generated with a KV cache over the whole group before the update;
it keeps a reference only with a KL term (`beta > 0`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectiveCost:
    """How an objective changes the plan: sequences per row or batch, and frozen models held beside it."""

    name: str = "sft"
    sequences: int = 1  # sequences per training example (2 for pairs and KTO units, GRPO's group size)
    extra_tokens: int = 0  # tokens per sequence beyond max_length (PPO's generated answer)
    reference_copy: bool = False  # a frozen copy of the policy's weights
    reward_model: str = ""  # PPO: the reward model's path ("" none)
    score_head: bool = False  # a reward model: one score per sequence instead of vocabulary logits
    kv_cache: bool = False  # GRPO: the group's rows are generated with a KV cache in the loop


def objective_cost(cfg, registry, method) -> ObjectiveCost:
    """The cost of the recipe's `objective` section (SFT's when there is none); settings the recipe leaves
    out take the objective's registered defaults."""
    settings = dict(cfg.get("objective") or {})
    name = settings.get("type", "sft")
    if name == "sft":
        return ObjectiveCost()
    entry = registry.objectives.get(name)
    settings = {**dict(entry.defaults), **settings}
    full_weights = not method.uses_peft
    reference = bool(entry.reference) and full_weights and not settings.get("precompute_ref_log_probs")
    if "num_generations" in settings:  # GRPO-style groups: the reference serves only the KL term
        return ObjectiveCost(name, int(settings["num_generations"]),
                             int(settings.get("max_completion_length") or 0),
                             reference and float(settings.get("beta") or 0) > 0, kv_cache=True)
    if entry.data == "prompts":
        return ObjectiveCost(name, 1, int(settings.get("max_new_tokens") or 0), reference,
                             str(settings.get("reward_model") or ""))
    return ObjectiveCost(name, 2, 0, reference, score_head=entry.head == "score")


def kv_cache_bytes(arch, plan) -> float:
    """The KV cache of generating the plan's rows in one batch (keys and values of every layer, every row,
    every position, in the compute dtype, or fp32 for a quantised base's fp32 stream): held while the group
    is sampled, freed before the update's forward pass (0 for objectives that do not generate so)."""
    if not plan.kv_cache:
        return 0.0
    width = 4 if plan.load_in_bits else min(plan.compute_bytes, plan.weight_bytes)
    keys, values = arch.head_dim + arch.rope_head_dim, arch.v_head_dim or arch.head_dim
    per_token = arch.num_layers * arch.num_kv_heads * (keys + values)
    return float(plan.batch_size * plan.seq_len * per_token * width)
