"""GRPO's padding-free loss pass computes what the padded one does: the same log-probs, entropies and
gradients for completions sampled after left-padded prompts, with no token attending to another sample."""

from __future__ import annotations

import pytest
import torch

from xtune.objectives import padding_free as pf
from xtune.objectives import ppo_rollout as ro
from xtune.objectives.grpo import GRPO


class Tokenizer:
    pad_token_id = 0


def tiny(arch: str = "llama"):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    kinds = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_class, model_class = kinds[arch]
    config = config_class(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, eos_token_id=2, use_cache=False)
    return model_class(config).eval()


def sampled(model, seed: int = 0):
    """Four prompts of different lengths (left-padded), two completions each, cut at the stop token 2."""
    torch.manual_seed(seed)
    lengths = [3, 7, 5, 2]
    prompts = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
    mask = torch.zeros_like(prompts)
    for b, n in enumerate(lengths):
        prompts[b, -n:] = torch.randint(3, 64, (n,))
        mask[b, -n:] = 1
    prompts, mask = prompts.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
    with torch.no_grad():
        return ro.sample_answers(model, prompts, mask, stop_ids=[2, 5, 9], pad_id=0, max_new_tokens=9,
                                 temperature=1.0, top_p=1.0, top_k=0)


def objective(padding_free: bool) -> GRPO:
    grpo = GRPO(num_generations=2, max_completion_length=9, temperature=0.7, padding_free=padding_free)
    grpo.tokenizer = Tokenizer()
    return grpo


def test_packing_keeps_every_token_and_drops_the_padding():
    model = tiny()
    got = sampled(model)
    seq, att, _, width, answer_mask = got.forward_args()
    packed = pf.pack_completions(seq, att, width, answer_mask)
    assert int(answer_mask.sum()) == int(packed.keep.sum()) == len(packed.targets)
    real = int(att.sum())
    assert packed.input_ids.numel() < att.numel() and packed.input_ids.numel() >= real
    pairs = set(zip(packed.sample.tolist(), packed.index.tolist(), strict=True))
    assert pairs == {tuple(p) for p in answer_mask.nonzero().tolist()}  # every completion token, once
    assert len(packed.input_ids) < len(seq)  # fewer rows than samples: short ones share a row
    one = pf.pack_completions(seq, att, width, answer_mask, one_row=True)
    assert one.input_ids.shape == (1, real) and int(one.keep.sum()) == int(answer_mask.sum())


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_padding_free_logps_entropies_and_gradients_equal_the_padded(arch):
    model = tiny(arch)
    got = sampled(model, seed=3)
    args = got.forward_args()
    assert (~got.answer_mask).any(), "the completions should differ in length"
    assert len(pf.pack_completions(*args[:2], args[3], args[4]).input_ids) < len(args[0])  # rows shared
    results = []
    for padding_free in (False, True):
        model.zero_grad()
        logps, entropy = objective(padding_free).logps(model, *args)
        advantages = torch.linspace(-1, 1, logps.shape[0])[:, None]
        (logps * advantages * got.answer_mask).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((logps.detach(), entropy, grads))
    (padded, padded_entropy, padded_grads), (packed, packed_entropy, packed_grads) = results
    assert torch.allclose(packed, padded, atol=1e-5), (packed - padded).abs().max()
    assert torch.allclose(packed_entropy, padded_entropy, atol=1e-5)
    assert (packed[~got.answer_mask] == 0).all()
    for a, b in zip(packed_grads, padded_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    one = pf.pack_completions(*args[:2], args[3], args[4], one_row=True)  # FlashAttention-2's layout
    with torch.no_grad():
        logits = pf.packed_logits(model, one) / 0.7
    assert torch.allclose(one.unpack(ro.picked_logps(logits, one.targets), tuple(padded.shape)), padded,
                          atol=1e-5)


def test_auto_packs_where_the_family_takes_packed_rows_and_refuses_true_where_it_does_not():
    from types import SimpleNamespace

    from xtune.errors import ConfigError

    model = tiny()
    for adapter, expected in ((None, True), (SimpleNamespace(supports_varlen=True), True),
                              (SimpleNamespace(supports_varlen=False), False)):
        grpo = GRPO(num_generations=2)
        grpo.decide_layout(model, adapter)
        assert grpo.padding_free is expected
    with pytest.raises(ConfigError, match="padding_free=True"):
        GRPO(num_generations=2, padding_free=True).decide_layout(model, SimpleNamespace(supports_varlen=0))
    with pytest.raises(ConfigError, match="padding_free='yes'"):
        GRPO(num_generations=2, padding_free="yes")
