"""Packing samples into rows of at most `max_length` tokens, without cross-sample attention.

Best-fit decreasing bin packing: samples are placed longest first, each into the fullest row that
still has room, so short samples fill the gaps that long ones leave (greedy concatenation in
reading order wastes the tail of nearly every row). A sample never straddles two rows.
`position_ids` restart at 0 for every sample: transformers' sdpa/eager attention (with
`use_cache=False`) and varlen FlashAttention both derive the per-sample block mask from those
restarts, so no token attends to another sample.
"""

from __future__ import annotations

import bisect
import random


def best_fit_decreasing(lengths: list[int], capacity: int, seed: int | None = None) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total length <= capacity.

    With a seed, samples of equal length are placed in random order and the bins are shuffled, so
    rows do not come out sorted by length.
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: ties keep the shuffled order
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"sample {i} has {size} tokens, more than the row length {capacity}")
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            room, b = free.pop(at)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - size > 0:
            bisect.insort(free, (room - size, b))
    if seed is not None:
        rng.shuffle(bins)
    return bins


def pack_rows(input_ids: list[list[int]], labels: list[list[int]], max_length: int,
              seed: int | None = None, extra: dict[str, list[list]] | None = None) -> dict[str, list[list]]:
    """Columns of packed rows: input_ids, labels and position_ids (restarting per sample), plus each `extra`
    list column (e.g. a sample's image files) concatenated in the order of the row's samples."""
    rows = pack_units([[(ids, labs)] for ids, labs in zip(input_ids, labels, strict=True)], max_length, seed)
    members = rows.pop("units")
    for key, column in (extra or {}).items():
        rows[key] = [[item for i in row for item in column[i]] for row in members]
    return rows


def pack_units(units: list[list[tuple[list[int], list[int]]]], capacity: int,
               seed: int | None = None) -> dict[str, list[list[int]]]:
    """Rows of whole units (a unit is a few samples that must stay together and in order, such as the chosen
    and rejected sequence of a preference pair), positions restarting per sample; `units` lists the indices of
    the units each row holds."""
    bins = best_fit_decreasing([sum(len(ids) for ids, _ in unit) for unit in units], capacity, seed)
    rows: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": [], "units": []}
    for members in bins:
        ids, labs, pos = [], [], []
        for i in members:
            for sample_ids, sample_labels in units[i]:
                ids += sample_ids
                labs += sample_labels
                pos += range(len(sample_ids))
        rows["input_ids"].append(ids)
        rows["labels"].append(labs)
        rows["position_ids"].append(pos)
        rows["units"].append(list(members))
    return rows


def sample_lengths(position_ids: list[int]) -> list[int]:
    """Lengths of the samples in one packed row, read from where position_ids restart at 0."""
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def cu_seqlens(position_ids: list[int]) -> list[int]:
    """Cumulative sample boundaries of one packed row, as varlen FlashAttention takes them."""
    out = [0]
    for length in sample_lengths(position_ids):
        out.append(out[-1] + length)
    return out
