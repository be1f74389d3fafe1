"""Answers of a model to many prompts: batched greedy generation with left padding, cut at the stop words.

The prompt format (`Prompting`) is the caller's: `xtune eval` takes `xtune chat`'s (so a test set is
prompted exactly as a chat), the training loop the recipe's template (`recipe_prompting`, as its sample
chats). Prompts are sorted by length before they are batched, so a batch pads little, and the answers
come back in the order of the prompts. Every answer ends at the first stop token (EOS and the template's
single-token stop words end `generate` itself, per row) or at the first text stop word.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from xtune.templates.stops import cut_at_stop, stop_token_ids, stop_words


@dataclass
class Prompting:
    """How prompts are rendered for a model and where its answers stop."""

    render: Callable[[list[dict]], str]  # messages -> the prompt text, generation prompt included
    stop_words: list[str] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)


def recipe_prompting(template: str | None, tokenizer, model, *, registry) -> Prompting:
    """The prompt format of a recipe's template (the tokenizer's own chat template without one), stopping
    where `xtune chat` stops (`xtune.templates.stops`)."""
    if template:
        from xtune.templates import render_prompt

        def render(messages):
            return render_prompt(template, messages, tokenizer, registry=registry)
    else:
        def render(messages):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    words = stop_words(template, tokenizer, registry=registry)
    return Prompting(render, words, stop_token_ids(words, tokenizer, model))


@dataclass
class Generated:
    prompts: list[str]  # the rendered prompts
    answers: list[str]
    seconds: float

    @property
    def records_per_s(self) -> float:
        return len(self.answers) / max(self.seconds, 1e-9)


def _left_padded(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def _answer(tokens: list[int], tokenizer, prompting: Prompting) -> str:
    stops = set(prompting.eos_token_ids)
    end = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
    answer, _ = cut_at_stop(tokenizer.decode(tokens[:end], skip_special_tokens=True), prompting.stop_words)
    return answer.strip()


@torch.no_grad()
def generate_answers(model, tokenizer, prompting: Prompting, conversations: list[list[dict]], *,
                     batch_size: int = 8, max_new_tokens: int = 128,
                     progress: bool | str = True) -> Generated:
    """Greedy answers to `conversations` (each ending on the turn the model answers). `progress`: a tqdm
    bar on stderr with the rate and time left (a string labels it)."""
    started = time.perf_counter()
    prompts = [prompting.render(messages) for messages in conversations]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bar = _bar(len(prompts), progress)
    answers: list[str] = [""] * len(prompts)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start: start + batch_size]
            ids, mask = _left_padded([encoded[i] for i in batch], pad_id, device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, temperature=None, top_p=None, top_k=None,
                                 eos_token_id=prompting.eos_token_ids or None, pad_token_id=pad_id,
                                 use_cache=True)
            for row, i in enumerate(batch):
                answers[i] = _answer(out[row, ids.shape[1]:].tolist(), tokenizer, prompting)
            if bar is not None:
                bar.update(len(batch))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return Generated(prompts, answers, time.perf_counter() - started)


def _bar(total: int, progress: bool | str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    label = progress if isinstance(progress, str) else "generating"
    return tqdm(total=total, desc=label, unit="rec", file=sys.stderr, dynamic_ncols=True)
