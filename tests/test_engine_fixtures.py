"""Tiny assets for the engine and method tests, built offline in about a second.

A byte-level BPE tokenizer trained on a few sentences (with <s>, </s>, <unk>, <pad> and the llama-2 chat
markers as tokens), random Llama and Qwen2 models sized for milliseconds per step, and an alpaca file.
Imported by tests/test_engine*.py and tests/test_methods*.py; the `test_` check below keeps the
fixtures themselves honest.
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = ("the cat sat on a mat and the dog ran in the park while birds sang songs about rivers, "
         "numbers one two three four five; answer question explain write list name give describe").split()


def alpaca_records(n: int = 24) -> list[dict]:
    out = []
    for i in range(n):
        a, b, c = WORDS[i % len(WORDS)], WORDS[(3 * i + 1) % len(WORDS)], WORDS[(7 * i + 2) % len(WORDS)]
        out.append({"instruction": f"write {a} {b}", "input": "" if i % 3 else f"about {c}",
                    "output": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(4 + i % 9))})
    return out


def write_alpaca(path: Path, n: int = 24) -> Path:
    path.write_text(json.dumps(alpaca_records(n)), encoding="utf-8")
    return path


def make_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(WORDS)] * 4 + ["[INST] <<SYS>> <</SYS>> [/INST] ### Instruction: Response: Input:"] * 4
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, arch: str = "llama", vocab_size: int = 400):
    """A random 2-layer model with hidden size 32 (a forward/backward step takes milliseconds)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(folder)
    return model


def make_assets(root: Path, arch: str = "llama") -> tuple[Path, Path]:
    """(model folder with tokenizer, alpaca file) under `root`."""
    model_dir = root / f"tiny_{arch}"
    if not (model_dir / "config.json").exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        tok = make_tokenizer(model_dir)
        make_model(model_dir, arch, vocab_size=len(tok))
    data = root / "alpaca.json"
    if not data.exists():
        write_alpaca(data)
    return model_dir, data


def test_assets_load_back(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, data = make_assets(tmp_path)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.convert_tokens_to_ids("<s>") == 1 and tok.pad_token == "<pad>"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size == len(tok)
    assert len(json.loads(data.read_text())) == 24
