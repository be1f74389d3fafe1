"""Packing, collation and length-grouped sampling; packed loss equals per-sample loss on a tiny Llama."""

from __future__ import annotations

import random

import pytest

from xtune.data.collate import Collator, build_collator, pad_token_id
from xtune.data.packing import best_fit_decreasing, cu_seqlens, pack_rows, sample_lengths
from xtune.data.sampler import GlobalBatchSampler
from xtune.data.tokenize import IGNORE_INDEX
from xtune.errors import ConfigError


def test_best_fit_decreasing_places_every_sample_once_within_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(1, 300) for _ in range(500)]
    bins = best_fit_decreasing(lengths, 512, seed=3)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    fill = sum(lengths) / (len(bins) * 512)
    greedy_rows, room = 0, 0  # concatenating in reading order, a new row whenever the next one does not fit
    for n in lengths:
        if n > room:
            greedy_rows, room = greedy_rows + 1, 512
        room -= n
    assert len(bins) < greedy_rows and fill > 0.97
    assert best_fit_decreasing(lengths, 512, seed=3) == bins  # deterministic for a seed
    with pytest.raises(ValueError, match="more than the row length"):
        best_fit_decreasing([5, 600], 512)


def test_pack_rows_restarts_positions_per_sample():
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    labels = [[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 5], [IGNORE_INDEX, 7, 8, 9]]
    rows = pack_rows(ids, labels, max_length=6)
    assert sorted(map(len, rows["input_ids"])) == [3, 6]
    for row_ids, row_labels, pos in zip(rows["input_ids"], rows["labels"], rows["position_ids"], strict=True):
        start = 0
        for length in sample_lengths(pos):
            sample = row_ids[start:start + length]
            k = ids.index(sample)  # a whole sample, never split across rows
            assert row_labels[start:start + length] == labels[k]
            assert pos[start:start + length] == list(range(length))
            start += length
    assert cu_seqlens([0, 1, 2, 0, 1, 0]) == [0, 3, 5, 6]


class _Tok:
    def __init__(self, pad=None, eos=None):
        self.pad_token_id, self.eos_token_id = pad, eos


def test_collator_pads_with_the_tokenizers_pad_id():
    collate = build_collator({"pack_to_max_length": False}, _Tok(pad=7, eos=2))
    batch = collate([{"input_ids": [5, 6, 9], "labels": [IGNORE_INDEX, 6, 9]},
                     {"input_ids": [5], "labels": [IGNORE_INDEX]}])
    assert batch["input_ids"].tolist() == [[5, 6, 9], [5, 7, 7]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 9], [IGNORE_INDEX] * 3]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert "position_ids" not in batch
    assert pad_token_id(_Tok(pad=None, eos=2)) == 2
    with pytest.raises(ConfigError, match="neither a pad nor an EOS"):
        pad_token_id(_Tok())


def test_packed_collation_has_positions_and_no_attention_mask():
    collate = Collator(pad_id=0, packed=True, pad_to_multiple_of=4)
    batch = collate([{"input_ids": [3, 4, 5], "labels": [IGNORE_INDEX, 4, 5], "position_ids": [0, 1, 0]}])
    assert batch["position_ids"].tolist() == [[0, 1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 4, 5, IGNORE_INDEX]]
    assert "attention_mask" not in batch


def test_length_grouped_sampler():
    rng = random.Random(1)
    lengths = [rng.randint(1, 1000) for _ in range(403)]
    sampler = GlobalBatchSampler(403, 4, lengths=lengths, seed=0, mega_batch_mult=8, rank=0, world_size=1)
    order = list(sampler)
    assert len(order) == len(sampler) == 404  # padded to whole micro-batches with the first row
    assert sorted(set(order)) == list(range(403))
    batches = [order[i:i + 4] for i in range(0, 400, 4)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 100  # random batches of 4 would spread ~500 tokens
    sampler.set_epoch(1)
    assert list(sampler) != order
    shards = [list(GlobalBatchSampler(403, 4, lengths=lengths, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(GlobalBatchSampler(403, 4, seed=0, rank=0, world_size=2))
    assert set(shards[0] + shards[1]) == set(range(403))


def steps(size, batch, accumulation, world, lengths):
    """The rows of every optimizer step, as sets, for one way of splitting the global batch."""
    streams = [list(GlobalBatchSampler(size, batch, accumulation=accumulation, lengths=lengths, seed=5,
                                       mega_batch_mult=3, rank=r, world_size=world)) for r in range(world)]
    per_step = batch * accumulation
    return [sorted(i for stream in streams for i in stream[s:s + per_step])
            for s in range(0, len(streams[0]), per_step)]


@pytest.mark.parametrize("grouped", [True, False])
def test_the_rows_of_each_step_do_not_depend_on_how_the_global_batch_is_split(grouped):
    rng = random.Random(2)
    lengths = [rng.randint(1, 500) for _ in range(96)] if grouped else None
    reference = steps(96, 8, 1, 1, lengths)
    assert len(reference) == 12 and sorted(i for s in reference for i in s) == list(range(96))
    for batch, accumulation, world in [(4, 2, 1), (4, 1, 2), (2, 2, 2), (1, 4, 2), (1, 2, 4), (2, 1, 4)]:
        assert steps(96, batch, accumulation, world, lengths) == reference, (batch, accumulation, world)
    if grouped:  # the micro-batches of a step are cut from its length-sorted rows: alike in length
        stream = list(GlobalBatchSampler(96, 2, accumulation=2, lengths=lengths, seed=5, world_size=2,
                                         rank=0))
        spread = [abs(lengths[stream[i]] - lengths[stream[i + 1]]) for i in range(0, 96 // 2, 2)]
        assert sum(spread) / len(spread) < 60  # random pairs would spread ~165


@pytest.fixture(scope="module")
def tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation="sdpa", use_cache=False)
    return LlamaForCausalLM(config).eval()


def _samples(seed=0, count=5):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(6, 30)
        ids = [rng.randrange(3, 96) for _ in range(n)]
        prompt = rng.randint(1, n - 2)
        out.append((ids, [IGNORE_INDEX] * prompt + ids[prompt:]))
    return out


@pytest.mark.integration
def test_packed_loss_equals_token_weighted_per_sample_loss(tiny_llama):
    """No cross-sample attention: the packed row's loss is the token-weighted mean of the samples' losses."""
    import torch

    samples = _samples()
    rows = pack_rows([s[0] for s in samples], [s[1] for s in samples], max_length=256)
    assert len(rows["input_ids"]) == 1
    batch = Collator(pad_id=0, packed=True)([{k: v[0] for k, v in rows.items()}])
    with torch.no_grad():
        packed = tiny_llama(**batch, use_cache=False).loss.item()
        total = count = 0.0
        for ids, labels in samples:
            n = sum(1 for label in labels[1:] if label != IGNORE_INDEX)  # labels the shifted loss uses
            loss = tiny_llama(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]),
                              use_cache=False).loss
            total, count = total + loss.item() * n, count + n
        leaky = tiny_llama(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss.item()
    assert packed == pytest.approx(total / count, abs=1e-5)
    # The same row without position restarts attends across samples: far outside the tolerance above.
    assert abs(leaky - total / count) > 1e-4


@pytest.mark.integration
def test_padded_batch_matches_samples_run_alone(tiny_llama):
    import torch

    samples = _samples(seed=1, count=3)
    batch = Collator(pad_id=0, packed=False)([{"input_ids": i, "labels": lab} for i, lab in samples])
    with torch.no_grad():
        logits = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for b, (ids, _labels) in enumerate(samples):
            alone = tiny_llama(input_ids=torch.tensor([ids])).logits[0]
            assert torch.allclose(logits[b, :len(ids)], alone, atol=1e-5)
