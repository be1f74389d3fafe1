"""PPO's experience: generate answers to a batch of prompts, score them, and turn scores into advantages.

This is RLHF as InstructGPT describes it and TRL's PPO trainer implements it: the policy answers each prompt
(rendered by the chat template with its generation prompt, as chat renders it); the reward model scores the
whole conversation as it was trained to; every answer token gets a KL penalty to the reference model,
-kl_coef x (log pi - log pi_ref), and the last token also the score; GAE over the answer tokens with the
value head's estimates gives the advantages (whitened) and the returns the value head learns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from xtune.objectives.logps import keeps_selected_logits


@dataclass
class Rollout:
    """One batch of experience; every (batch, answer length) tensor is aligned with the answer tokens."""

    sequences: torch.Tensor  # prompt (left-padded) + answer (right-padded)
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int
    answer_mask: torch.Tensor  # bool: a real answer token (up to and including the stop token)
    logps: torch.Tensor  # the policy's log-probs when the answers were sampled
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    metrics: dict

    def select(self, rows: torch.Tensor) -> Rollout:
        take = {k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Rollout(**take)


@dataclass
class Sampled:
    """Answers sampled after left-padded prompts, laid out for a forward pass over prompt + answer."""

    answers: torch.Tensor  # right-padded after the first stop token
    answer_mask: torch.Tensor  # bool: a real answer token (up to and including the stop token)
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_length: int

    def forward_args(self) -> tuple:
        return (self.sequences, self.attention_mask, self.position_ids, self.prompt_length, self.answer_mask)


def sample_answers(llm, prompts, mask, *, stop_ids: list[int], pad_id: int, **sampling) -> Sampled:
    """`llm.generate` with sampling (`max_new_tokens`, `temperature`, `top_p`, `top_k`) and the KV cache,
    cut at the first stop token; positions count only real tokens (the prompts are left-padded)."""
    out = llm.generate(input_ids=prompts, attention_mask=mask, do_sample=True, eos_token_id=stop_ids,
                       pad_token_id=pad_id, use_cache=True, **sampling)
    answers, answer_mask = cut_at_stop(out[:, prompts.shape[1]:], stop_ids, pad_id)
    attention = torch.cat([mask, answer_mask.long()], dim=1)
    return Sampled(answers, answer_mask, torch.cat([prompts, answers], dim=1), attention,
                   (attention.cumsum(-1) - 1).clamp(min=0), prompts.shape[1])


def answer_forward(llm, value_head, sequences, attention_mask, position_ids, prompt_length, answer_mask):
    """(log-probs, values) of every answer token: the logits and value at the position before each."""
    logits, out = answer_logits(llm, sequences, attention_mask, position_ids, prompt_length, answer_mask,
                                hidden=value_head is not None)
    logps = scatter_answers(picked_logps(logits, sequences[:, prompt_length:][answer_mask]), answer_mask)
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, prompt_length - 1:-1]
        values = value_head(hidden.to(value_head.weight.dtype)).squeeze(-1).float() * answer_mask
    return logps, values


def answer_logits(llm, sequences, attention_mask, position_ids, prompt_length, answer_mask, hidden=False):
    """(float logits predicting each real answer token, flattened; the model's output): only those positions'
    logits are computed where the model can keep a subset."""
    keep = torch.zeros_like(sequences, dtype=torch.bool)
    keep[:, prompt_length - 1:-1] = answer_mask
    kwargs = dict(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=False, output_hidden_states=hidden)
    if keeps_selected_logits(llm):
        out = llm(**kwargs, logits_to_keep=keep)
        logits = out.logits
    else:
        out = llm(**kwargs)
        logits = out.logits[:, -sequences.shape[1]:][keep]
    return logits.float(), out


def picked_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def scatter_answers(values: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Flattened per-answer-token values back to (batch, answer length), zero elsewhere."""
    out = torch.zeros(answer_mask.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(answer_mask, values)


def cut_at_stop(answers: torch.Tensor, stop_ids: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(answers with everything after the first stop token padded, mask of the real tokens, stop included)."""
    is_stop = torch.isin(answers, torch.tensor(stop_ids, device=answers.device))
    after = (is_stop.cumsum(-1) - is_stop.long()) > 0  # strictly after the first stop token
    return answers.masked_fill(after, pad_id), ~after


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """(advantages, returns) by generalised advantage estimation over the answer tokens."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros_like(running)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
        next_value = values[:, t] * mask[:, t]
    return advantages, advantages + values


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    n = mask.sum().clamp(min=1)
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / n
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return (out if shift_mean else out + mean) * mask


def answer_texts(tokenizer, answers: torch.Tensor, mask: torch.Tensor, stop_ids: list[int]) -> list[str]:
    """The answers as text without their stop token, for the reward model to read."""
    out = []
    for row, keep in zip(answers.tolist(), mask.tolist(), strict=True):
        ids = [t for t, k in zip(row, keep, strict=True) if k and t not in stop_ids]
        out.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return out


def conversations(prompt_messages: list[str], answers: list[str]) -> list[list[dict]]:
    return [json.loads(p) + [{"role": "assistant", "content": a}] for p, a in zip(prompt_messages, answers,
                                                                                   strict=True)]
