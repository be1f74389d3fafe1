"""Tiny offline assets for the export, chat and demo tests, built in about a second.

A byte-level BPE tokenizer with SmolLM2's special tokens (so the smollm2 recipes and the ChatML-style
`smollm2_chat` template apply), a random 2-layer Llama saved as safetensors, and a checkpoint written
the way `xtune.engine.checkpoints` writes one (trainable tensors only, under the engine wrapper's
`llm.` prefix, with mmengine's message hub). The tests at the bottom check the assets themselves.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from xtune.plugins import get_registry

RECIPE = "smollm2_135m_instruct_lora_self_cognition_e3"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "Hello! How can I help you today?", "Who are you? I am a helpful assistant.",
    "The capital of France is Paris.", "system user assistant", "Tell me a joke about cats.",
    "xtune fine-tunes language models from recipes.", "0123456789 abcdefghijklmnopqrstuvwxyz",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    from xtune.templates.export import export_jinja

    fast.chat_template = export_jinja("smollm2_chat", registry=get_registry())
    return fast


def build_model(vocab_size: int, hidden: int = 16, seed: int = 0, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@functools.cache
def _cached_model_dir(hidden: int) -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=f"xtune-tiny-{hidden}-")) / "model"
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), hidden=hidden)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_model_dir(dest: Path, hidden: int = 16) -> Path:
    """A copy of the tiny model folder at `dest` (built once per session, copied per test)."""
    shutil.copytree(_cached_model_dir(hidden), dest)
    return dest


def recipe_options(model_dir: Path, **extra) -> list[str]:
    """--cfg-options that point the SmolLM2 self-cognition recipe at the tiny model."""
    options = {"pretrained_model_name_or_path": str(model_dir), **extra}
    return [f"{k}={v}" for k, v in options.items()]


def load_recipe_cfg(model_dir: Path, **extra):
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    return load_recipe(resolve_recipe(RECIPE, get_registry()), recipe_options(model_dir, **extra))


def trained_lora_model(model_dir: Path, seed: int = 1, **extra):
    """The recipe's LoRA model on the tiny base with non-zero adapter weights (as after training)."""
    import torch

    from xtune.models.build import build_trainable
    from xtune.plan import resolve_plan
    from xtune.plugins import get_registry

    cfg = load_recipe_cfg(model_dir, **extra)
    model = build_trainable(cfg, get_registry(), resolve_plan(cfg, get_registry()), for_export=True).model
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


def tiny_base_and_adapter(root: Path) -> tuple[Path, Path]:
    """(root/base: the tiny model folder, root/adapter: a saved LoRA adapter for it with non-zero weights)."""
    base = tiny_model_dir(root / "base")
    adapter = root / "adapter"
    trained_lora_model(base).save_pretrained(adapter)
    return base, adapter


def save_engine_checkpoint(model, path: Path, losses=(2.5, 2.0, 1.5), pickled: bool = False) -> Path:
    """`iter_N.pth` as xtune's CheckpointFiles runner writes it (a safetensors + JSON folder), or as the
    older pickled file (`pickled=True`) mmengine's own Runner wrote."""
    import torch
    from mmengine.logging import MessageHub

    from xtune.checkpoint.store import write_store

    hub = MessageHub(name=f"xtune-test-{path}")
    for loss in losses:
        hub.update_scalar("train/loss", loss)
    state = {f"llm.{n}": p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    checkpoint = {"meta": {"xtune_trainable_only": True, "iter": len(losses)}, "state_dict": state,
                  "message_hub": hub.state_dict(), "optimizer": {}}
    torch.save(checkpoint, path) if pickled else write_store(checkpoint, path)
    return path


def test_tiny_tokenizer_has_the_chat_tokens(tmp_path):
    tokenizer = build_tokenizer()
    for token in SPECIALS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHello<|im_end|>" in text


def test_engine_style_checkpoint_holds_only_trained_tensors(tmp_path):
    """Both formats read the same through the restricted readers, the older one with its HistoryBuffer."""
    import torch

    from xtune.checkpoint.read import read_checkpoint
    from xtune.checkpoint.store import read_store

    model_dir = tiny_model_dir(tmp_path / "base")
    model = trained_lora_model(model_dir)
    ckpt = read_store(save_engine_checkpoint(model, tmp_path / "new" / "iter_3.pth"))
    assert ckpt["state_dict"] and all(k.startswith("llm.") and "lora_" in k for k in ckpt["state_dict"])
    old = read_checkpoint(save_engine_checkpoint(model, tmp_path / "iter_3.pth", pickled=True))
    new = read_checkpoint(tmp_path / "new" / "iter_3.pth")
    assert old.final_loss == new.final_loss == 2.0 and old.step == new.step == 3
    assert all(torch.equal(old.state_dict[k], v) for k, v in new.state_dict.items())


def shared_gguf() -> Path:
    """The tiny random Llama-2 GGUF in shared/ (the test skips when shared/ is absent)."""
    from conftest import shared_path

    return shared_path("reference", "models", "llama2_tiny_random", "llama-2-tiny-random.gguf")
