"""`grpo`: online RL with verifiable rewards (GRPO; the DAPO, Dr. GRPO and BNPO losses) on mmengine.

One training step is one generation batch: every prompt of the step's micro-batches is answered
`num_generations` times by the policy (sampled with the training template, `temperature` / `top_p` / `top_k`,
at most `max_completion_length` tokens, stopping at the template's stop words), the reward functions score
every completion (`xtune.objectives.reward_functions`: a math checker, a format rule, a reward model, a
user's function), and the rewards become advantages within each prompt's group (`grpo_loss`). Then
`num_iterations` optimizer updates follow, each over all the step's completions (one micro-batch per prompt
micro-batch), with importance ratios against the sampling policy when the policy has moved since sampling.
With `beta > 0` a KL term to the reference (the policy with adapters off, as for DPO) is added. The sampling
uses torch's random generator, whose state every checkpoint stores, so a resumed run samples what the
uninterrupted one did. Runs in one process (no DDP / DeepSpeed), like PPO.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from xtune.objectives import grpo_loss as gl
from xtune.objectives import padding_free as pf
from xtune.objectives import ppo_rollout as ro
from xtune.objectives.ppo import Updates, stop_token_ids
from xtune.objectives.settings import positive


@dataclass
class Completions:
    """One prompt micro-batch's completions, group by group (num_generations rows per prompt)."""

    sequences: torch.Tensor  # prompt (left-padded) + completion (right-padded)
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int
    answer_mask: torch.Tensor  # bool: a real completion token (up to and including the stop token)
    loss_mask: torch.Tensor  # answer_mask without the truncated completions when they are masked
    old_logps: torch.Tensor | None  # the sampling policy's, when num_iterations > 1
    ref_logps: torch.Tensor | None  # the reference's, when beta > 0
    stopped: torch.Tensor  # bool per completion: it ended with a stop token (else it was truncated)
    advantages: torch.Tensor | None = None

    def rows(self) -> int:
        return int(self.sequences.shape[0])


class GRPO:
    """reward_funcs / reward_weights: the reward functions (names, dicts with settings, or `pkg.mod:fn` /
    `file.py:fn`) and their weights; num_generations: completions per prompt; beta: weight of the KL term
    (0: no reference pass); epsilon / epsilon_high: the clip range (DAPO's clip-higher when epsilon_high >
    epsilon); num_iterations: updates per generation batch; loss_type: grpo | bnpo | dr_grpo | dapo;
    scale_rewards: group | batch | none; mask_truncated_completions: no loss on completions that hit
    max_completion_length; padding_free: pack prompt + completion without padding for the loss pass
    ('auto': where the family takes packed rows and the model computes selected logits)."""

    def __init__(self, reward_funcs=("format",), reward_weights=None, num_generations: int = 8,
                 max_completion_length: int = 256, temperature: float = 1.0, top_p: float = 1.0,
                 top_k: int = 0, beta: float = 0.0, epsilon: float = 0.2, epsilon_high: float | None = None,
                 num_iterations: int = 1, loss_type: str = "dapo", scale_rewards: str = "group",
                 mask_truncated_completions: bool = False, reference: str = "auto",
                 padding_free: bool | str = "auto"):
        from xtune.errors import ConfigError

        self.reward_specs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if reward_weights is not None and len(reward_weights) != len(self.reward_specs):
            raise ConfigError(f"objective 'grpo': {len(reward_weights)} reward_weights for "
                              f"{len(self.reward_specs)} reward_funcs", hint="give one weight per function")
        self.weights = [float(w) for w in reward_weights] if reward_weights is not None else \
            [1.0] * len(self.reward_specs)
        for name, value, allowed in (("loss_type", loss_type, gl.LOSS_TYPES),
                                     ("scale_rewards", scale_rewards, gl.SCALE_REWARDS)):
            if value not in allowed:
                raise ConfigError(f"objective 'grpo': {name}={value!r} is not one of {', '.join(allowed)}")
        self.num_generations = int(num_generations)
        if self.num_generations < 2:
            raise ConfigError("objective 'grpo': num_generations must be at least 2 (advantages are relative "
                              "to the other completions of the same prompt)")
        self.max_completion_length = int(positive("grpo", "max_completion_length", max_completion_length))
        self.temperature = positive("grpo", "temperature", temperature)
        self.top_p, self.top_k = float(top_p), int(top_k)
        self.beta = positive("grpo", "beta", beta, zero=True)
        self.epsilon_low = positive("grpo", "epsilon", epsilon)
        self.epsilon_high = self.epsilon_low if epsilon_high is None else positive("grpo", "epsilon_high",
                                                                                   epsilon_high)
        self.num_iterations = int(positive("grpo", "num_iterations", num_iterations))
        self.loss_type, self.scale_rewards = loss_type, scale_rewards
        self.mask_truncated = bool(mask_truncated_completions)
        self.reference = reference
        if padding_free not in (True, False, "auto"):
            raise ConfigError(f"objective 'grpo': padding_free={padding_free!r} is not True, False or 'auto'")
        self.padding_free = padding_free
        self.uses_reference = self.beta != 0.0  # beta = 0: no reference pass, no frozen copy
        self.functions: list = []

    def setup(self, *, llm, tokenizer, template, registry, precision: str = "float32", adapter=None) -> None:
        """Resolve the reward functions, find the stop tokens, switch dropout off (the sampled and the updated
        log-probs must come from the same function), decide the loss pass's layout."""
        from xtune.objectives.reward_functions import resolve_reward_functions

        self.decide_layout(llm, adapter)
        self.functions = resolve_reward_functions(self.reward_specs, registry)
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(tokenizer, template, registry)
        for module in llm.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    def decide_layout(self, llm, adapter=None) -> None:
        """padding_free 'auto' -> packed where the family takes packed rows (`supports_varlen`) and the model
        computes logits for selected positions; True where it cannot is refused."""
        from xtune.objectives.logps import keeps_selected_logits

        packs = keeps_selected_logits(llm) and (adapter is None or adapter.supports_varlen)
        if self.padding_free is True and not packs:
            from xtune.errors import ConfigError

            raise ConfigError("objective 'grpo': padding_free=True, but this model cannot take packed rows "
                              "(its family places tokens itself, or it has virtual tokens)",
                              hint="set objective.padding_free='auto'")
        self.padding_free = packs if self.padding_free == "auto" else self.padding_free

    def describe(self) -> str:
        names = ", ".join(f"{f.name} x{w:g}" for f, w in zip(self.functions, self.weights, strict=True))
        return (f"rewards {names}; {self.num_generations} completions per prompt, loss {self.loss_type}, "
                f"beta {self.beta:g}, stop tokens {self.stop_ids}, "
                f"loss pass {'padding-free' if self.padding_free else 'padded'}")

    # ---------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def sample(self, llm, reference, batch: dict) -> tuple[Completions, list[str], list[list[int]]]:
        """Each prompt of `batch` answered num_generations times: (completions, their texts, their ids)."""
        prompts = batch["input_ids"].repeat_interleave(self.num_generations, dim=0)
        mask = batch["attention_mask"].repeat_interleave(self.num_generations, dim=0)
        pad = self.tokenizer.pad_token_id
        was_training = llm.training
        llm.eval()
        try:
            got = ro.sample_answers(llm, prompts, mask, stop_ids=self.stop_ids, pad_id=pad,
                                    max_new_tokens=self.max_completion_length, temperature=self.temperature,
                                    top_p=self.top_p, top_k=self.top_k)
            answers, answer_mask, args = got.answers, got.answer_mask, got.forward_args()
            old = self.logps(llm, *args)[0] if self.num_iterations > 1 else None
            ref = None
            if self.beta != 0.0:
                with reference.active(llm) as ref_model:
                    ref = self.logps(ref_model, *args)[0]
        finally:
            llm.train(was_training)
        stops = torch.tensor(self.stop_ids, device=answers.device)
        stopped = (torch.isin(answers, stops) & answer_mask).any(-1)
        loss_mask = answer_mask & stopped[:, None] if self.mask_truncated else answer_mask
        ids = [[t for t, k in zip(row, keep, strict=True) if k] for row, keep in
               zip(answers.tolist(), answer_mask.tolist(), strict=True)]
        texts = ro.answer_texts(self.tokenizer, answers, answer_mask, self.stop_ids)
        return Completions(*args[:4], answer_mask, loss_mask, old, ref, stopped), texts, ids

    def rewards(self, batch: dict, texts: list[str], ids: list[list[int]]) -> torch.Tensor:
        """(completions, functions) rewards, NaN where a function returned None."""
        g = self.num_generations
        repeat = lambda values: [v for v in values for _ in range(g)]  # noqa: E731 - one prompt -> its group
        messages = [json.loads(m) for m in batch["prompt_messages"]]
        columns = [json.loads(c) for c in batch.get("columns") or ["{}"] * len(messages)]
        kwargs = {name: repeat([row.get(name) for row in columns]) for name in set().union(*columns)}
        prompts = self.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        kwargs.update(completion_ids=ids, max_completion_length=self.max_completion_length,
                      prompt_messages=repeat(messages))
        out = torch.full((len(texts), len(self.functions)), float("nan"))
        for j, function in enumerate(self.functions):
            values = function(repeat(prompts), texts, **kwargs)
            out[:, j] = torch.tensor([float("nan") if v is None else float(v) for v in values])
        return out

    def updates(self, model, batches: list) -> Updates:
        """The phase before the gradient steps: sample and score every prompt micro-batch, turn the rewards
        into advantages, then `num_iterations` updates over the completions (`model` is the engine's
        wrapper: its llm, reference and data preprocessor)."""
        parts, per_function, lengths, truncated = [], [], [], []
        for batch in batches:
            data = model.data_preprocessor(batch, True)
            part, texts, ids = self.sample(model.llm, model.reference, data)
            parts.append(part)
            per_function.append(self.rewards(data, texts, ids))
            lengths += [len(i) for i in ids]
            truncated += (~part.stopped).tolist()
        per_function = torch.cat(per_function)
        advantages, rewards, zero_std = gl.group_advantages(per_function, torch.tensor(self.weights),
                                                            self.num_generations, self.scale_rewards)
        start = 0
        for part in parts:
            part.advantages = advantages[start:start + part.rows()].to(part.sequences.device)
            start += part.rows()
        out = Updates(metrics=self.sample_metrics(per_function, rewards, zero_std, lengths, truncated))
        for _ in range(self.num_iterations):
            out.append([{"rollout": part} for part in parts])
        return out

    def sample_metrics(self, per_function, rewards, zero_std, lengths, truncated) -> dict:
        """What TRL logs of a generation batch: each function's mean / std, the total reward, the lengths."""
        metrics = {}
        for j, function in enumerate(self.functions):
            metrics[f"rewards/{function.name}/mean"] = torch.nanmean(per_function[:, j])
            metrics[f"rewards/{function.name}/std"] = gl.nanstd(per_function[:, j])
        grouped = rewards.view(-1, self.num_generations)
        metrics.update({"reward": torch.nanmean(rewards), "reward_std": gl.nanstd(grouped, dim=1).nanmean(),
                        "frac_reward_zero_std": zero_std.float().mean(),
                        "completions/mean_length": torch.tensor(lengths, dtype=torch.float).mean(),
                        "completions/clipped_ratio": torch.tensor(truncated, dtype=torch.float).mean()})
        return metrics

    # ---------------------------------------------------------------------------------- the update
    def logps(self, llm, sequences, attention_mask, position_ids, prompt_length, answer_mask):
        """(log-probs, entropies) of every completion token under the sampling distribution, i.e. the logits
        divided by `temperature` (as TRL computes them for the policy, the old policy and the reference)."""
        if self.padding_free is True:
            varlen = getattr(llm.config, "_attn_implementation", None) == "flash_attention_2"
            packed = pf.pack_completions(sequences, attention_mask, prompt_length, answer_mask,
                                         pad_id=self.tokenizer.pad_token_id or 0, one_row=varlen)
            logits, targets = pf.packed_logits(llm, packed), packed.targets
            scatter = lambda values: packed.unpack(values, tuple(answer_mask.shape))  # noqa: E731
        else:
            logits, _ = ro.answer_logits(llm, sequences, attention_mask, position_ids, prompt_length,
                                         answer_mask)
            targets = sequences[:, prompt_length:][answer_mask]
            scatter = lambda values: ro.scatter_answers(values, answer_mask)  # noqa: E731
        logits = logits / self.temperature
        logps = scatter(ro.picked_logps(logits, targets))
        with torch.no_grad():
            entropy = torch.logsumexp(logits, -1) - (logits.softmax(-1) * logits).sum(-1)
        return logps, scatter(entropy)

    def units(self, batch: dict) -> dict:
        part = batch["rollout"]
        return {"completions": part.rows(), "completion_tokens": int(part.loss_mask.sum())}

    def loss(self, llm, batch: dict, reference=None, share=None) -> dict:
        """The clipped surrogate (+ beta x KL) of one micro-batch of completions: its part of the update."""
        part = batch["rollout"]
        logps, entropy = self.logps(llm, part.sequences, part.attention_mask, part.position_ids,
                                    part.prompt_length, part.answer_mask)
        old = part.old_logps if part.old_logps is not None else logps.detach()
        per_token, terms = gl.token_terms(logps, old, part.ref_logps, part.advantages,
                                          epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
                                          beta=self.beta)
        counts = share.totals if share is not None else self.units(batch)
        loss = gl.aggregate(per_token, part.loss_mask, self.loss_type, completions=counts["completions"],
                            tokens=counts["completion_tokens"],
                            max_completion_length=self.max_completion_length)
        out = {"loss": loss, "entropy": gl.masked_mean(entropy, part.loss_mask)}
        for key in ("kl", "clip_low", "clip_high", "clip_region"):
            if key in terms:
                name = key if key == "kl" else f"clip_ratio/{key.removeprefix('clip_')}_mean"
                out[name] = gl.masked_mean(terms[key].detach(), part.loss_mask)
        return out
