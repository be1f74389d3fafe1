"""The completions' loss pass without padding: prompt + completion of every sample packed into rows.

GRPO's completions come out of `generate` laid out for it: prompts left-padded to the longest prompt,
completions right-padded to the longest completion. Run as they are, every row costs the longest prompt
plus the longest completion: padding that grows with the spread of the lengths (13 % of the tokens in a
micro-batch of the SmolLM2 GSM8K recipe, far more when some completions stop early and others run to the
limit). Here the real tokens of each sample (its prompt's and its completion's) are packed, best-fit
decreasing, with position_ids restarting per sample and no attention mask: transformers' attention
derives the per-sample blocks from the restarts (varlen FlashAttention on CUDA; sdpa/eager with
`use_cache=False`, as every training forward runs), so no token sees another sample. With FlashAttention-2
all samples go into one row (varlen attention costs what each sample costs, however long the row); with
sdpa/eager, which compute the whole masked row, into rows no longer than the longest sample, so the
attention's cost per token stays where it was and what goes is the padding: much when completions vary in
length, nothing when every sample is longer than half the longest (the SmolLM2 GSM8K recipe on CPU:
its system prompt makes every sample 160-260 tokens, so the rows stay as they were).

The log-probs come back in the padded layout (batch, completion length), so the loss, the old and the
reference log-probs, and the aggregation are the same code either way; only where the logits are computed
changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xtune.data.packing import best_fit_decreasing


@dataclass
class PackedCompletions:
    """Packed rows of (prompt + completion) samples and where each completion token's prediction sits."""

    input_ids: torch.Tensor  # (rows, width); tails of rows that are not full hold a pad "sample"
    position_ids: torch.Tensor
    keep: torch.Tensor  # bool (rows, width): positions whose logits predict a completion token
    targets: torch.Tensor  # the completion token each kept position predicts, in row-major order
    sample: torch.Tensor  # which sample (row of the padded layout) each kept position belongs to
    index: torch.Tensor  # which completion position of that sample

    def unpack(self, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Values per kept position (row-major) in the padded layout (batch, answer length), 0 elsewhere."""
        out = torch.zeros(shape, dtype=values.dtype, device=values.device)
        return out.index_put((self.sample, self.index), values)


def pack_completions(sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                     answer_mask: torch.Tensor, pad_id: int = 0, one_row: bool = False) -> PackedCompletions:
    """Pack the real tokens of each padded row (left-padded prompt, right-padded completion) into rows as
    long as the longest sample, or all into one row (`one_row`: for varlen attention, whose cost does not
    grow with the row, only with each sample)."""
    prompt_real = attention_mask[:, :prompt_length].sum(-1).tolist()
    answer_real = answer_mask.sum(-1).tolist()
    lengths = [p + a for p, a in zip(prompt_real, answer_real, strict=True)]
    width = sum(lengths) if one_row else max(lengths)
    bins = best_fit_decreasing(lengths, width)
    ids = torch.full((len(bins), width), pad_id, dtype=sequences.dtype, device=sequences.device)
    positions = torch.zeros_like(ids)
    keep = torch.zeros(ids.shape, dtype=torch.bool, device=sequences.device)
    where: list[tuple[int, int, int, int]] = []  # (row, column of the prediction, sample, answer index)
    for row, members in enumerate(bins):
        at = 0
        for b in members:
            p, a = prompt_real[b], answer_real[b]
            ids[row, at:at + p] = sequences[b, prompt_length - p:prompt_length]
            ids[row, at + p:at + p + a] = sequences[b, prompt_length:prompt_length + a]
            positions[row, at:at + p + a] = torch.arange(p + a, device=sequences.device)
            where += [(row, at + p - 1 + j, b, j) for j in range(a)]
            at += p + a
        positions[row, at:] = torch.arange(width - at, device=sequences.device)  # the tail: its own block
    where.sort()  # row-major, the order the kept logits come out in
    rows, cols, samples, index = (torch.tensor(c, dtype=torch.long, device=sequences.device)
                                  for c in zip(*where, strict=True)) if where else \
        (torch.zeros(0, dtype=torch.long, device=sequences.device),) * 4
    keep[rows, cols] = True
    targets = sequences[samples, prompt_length + index]
    return PackedCompletions(ids, positions, keep, targets, samples, index)


def packed_logits(llm, packed: PackedCompletions) -> torch.Tensor:
    """Float logits at the kept positions, row-major (`logits_to_keep` with the boolean mask)."""
    out = llm(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False,
              logits_to_keep=packed.keep)
    return out.logits.float()

