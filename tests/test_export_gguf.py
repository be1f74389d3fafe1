"""`xtune convert hf_to_gguf`: checked against llama.cpp's own files and transformers' own GGUF reader.

Nothing here trusts the writer: the token tables are compared with the vocabulary files llama.cpp's
converter wrote (shared/reference/tokenizers/llamacpp_ggml_vocab), the RoPE factors with transformers'
implementation, and every written model is loaded back with transformers' GGUF reader, whose logits must
match the source's: f32 to 1e-4 and f16 to 1e-3; q8_0 gives the same next token after every prompt. One
matrix test covers each architecture on a tiny random model; the tiny Llama-2 (real SentencePiece
vocabulary) and SmolLM2-135M with an adapter merged on the fly cover real tokenizers and weights.
"""

from __future__ import annotations

import json

import pytest
from conftest import shared_path
from test_export_helpers import build_tokenizer

from xtune.cli.main import main
from xtune.errors import UsageError
from xtune.plugins import get_registry

LLAMACPP_VOCAB = ("reference", "tokenizers", "llamacpp_ggml_vocab")


def _gguf_fields(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return reader, {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}


# ----------------------------------------------------------------------------------- tokenizer, unit
def _tokenizer_json(*parts):
    return json.loads(shared_path(*parts, "tokenizer.json").read_text(encoding="utf-8"))


def _vocab_file(name: str) -> dict:
    """The metadata of one of llama.cpp's vocabulary files (transformers' reader: gguf's takes seconds)."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")
    return read_gguf_metadata(str(shared_path(*LLAMACPP_VOCAB, name)), keys)[0]


@pytest.mark.parametrize("folder, vocab_file", [("hf_llama3_1", "ggml-vocab-llama-bpe.gguf"),
                                                ("hf_qwen2_5", "ggml-vocab-qwen2.gguf")])
def test_byte_level_tokens_and_pre_tokenizer_match_llama_cpps_own_vocab_files(folder, vocab_file):
    from xtune.export.gguf_vocab import pre_tokenizer_name, token_table, tokenizer_kind

    tokenizer_json = _tokenizer_json("reference", "tokenizers", folder)
    vocab = _vocab_file(vocab_file)
    tokens, types = vocab["tokenizer.ggml.tokens"], vocab["tokenizer.ggml.token_type"]
    assert tokenizer_kind(tokenizer_json) == vocab["tokenizer.ggml.model"] == "gpt2"
    assert pre_tokenizer_name(tokenizer_json) == vocab["tokenizer.ggml.pre"]
    ours, our_types = token_table(tokenizer_json, len(tokens), "gpt2")
    # llama.cpp's Qwen2 file predates Qwen2.5's extra special tokens: compare the ids both tokenizers have
    padded = [i for i, t in enumerate(tokens) if t.startswith("[PAD")]
    common = padded[0] if folder == "hf_qwen2_5" else len(tokens)
    assert ours[:common] == tokens[:common]
    assert [int(t) for t in our_types[:common]] == types[:common]


def test_sentencepiece_tokens_match_llama_cpps_llama2_vocab_and_scores_follow_the_merges():
    from xtune.export.gguf_vocab import adds_space_prefix, merge_scores, token_table, tokenizer_kind

    tokenizer_json = _tokenizer_json("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    vocab = _vocab_file("ggml-vocab-llama-spm.gguf")
    tokens = vocab["tokenizer.ggml.tokens"]
    assert tokenizer_kind(tokenizer_json) == vocab["tokenizer.ggml.model"] == "llama"
    assert adds_space_prefix(tokenizer_json)
    ours, types = token_table(tokenizer_json, len(tokens), "llama", unk_token="<unk>")
    assert ours == tokens and [int(t) for t in types] == vocab["tokenizer.ggml.token_type"]
    scores = dict(zip(ours, merge_scores(tokenizer_json, ours), strict=True))
    merges = tokenizer_json["model"]["merges"]
    first, later = "".join(merges[0]), "".join(merges[500])
    assert scores[first] == 0 and scores[later] < scores[first]  # llama.cpp merges the best score first
    assert scores["<0x0A>"] < scores[later]  # tokens no merge makes are never preferred


def test_a_pre_tokenizer_xtune_cannot_name_is_refused():
    from xtune.export.gguf_vocab import pre_tokenizer_name, tokenizer_kind

    with pytest.raises(UsageError, match="pre-tokenizer .*Whitespace"):
        pre_tokenizer_name({"pre_tokenizer": {"type": "Whitespace"}})
    with pytest.raises(UsageError, match="'Unigram'"):
        tokenizer_kind({"model": {"type": "Unigram"}, "decoder": {"type": "Metaspace"}})
    digits = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                    {"type": "ByteLevel", "use_regex": True}]}
    assert pre_tokenizer_name({"pre_tokenizer": digits}) == "smollm"


# ------------------------------------------------------------------------------- architecture, unit
def test_llama3_rope_factors_equal_transformers_scaled_frequencies():
    import numpy as np
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from xtune.export.gguf_arch import extra_tensors

    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
    config = LlamaConfig(hidden_size=256, num_attention_heads=2, max_position_embeddings=131072,
                         rope_parameters=rope)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    base = 1.0 / (500000.0 ** (np.arange(0, 128, 2) / 128))
    factors = extra_tensors(config)["rope_freqs.weight"]
    assert factors.shape == (64,) and np.allclose(base / factors, scaled.numpy(), rtol=1e-5)
    assert extra_tensors(LlamaConfig()) == {}


def test_llama_q_k_biases_are_permuted_with_their_weights():
    """A Llama with q/k biases (InternLM v1 loaded natively): llama.cpp adds the bias after the projection,
    so its rows must move as the weight's rows do (llama.cpp's converter permutes q_proj.bias too)."""
    import numpy as np
    from transformers import LlamaConfig

    from xtune.export.gguf_arch import ARCHITECTURES, convert_tensor

    config = LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(32).astype(np.float32)
    for name, rows in (("attn_q", 32), ("attn_k", 16)):
        weight = rng.standard_normal((rows, 32)).astype(np.float32)
        bias = rng.standard_normal(rows).astype(np.float32)
        weight_out, bias_out, output = (
            convert_tensor(f"blk.0.{name}.{kind}", data, config, ARCHITECTURES["llama"])
            for kind, data in (("weight", weight), ("bias", bias), ("weight", (weight @ x + bias)[:, None])))
        assert np.allclose(weight_out @ x + bias_out, output[:, 0], atol=1e-5)


def test_storage_types_keep_vectors_f32_and_fall_back_where_rows_do_not_fill_blocks():
    from gguf import GGMLQuantizationType as Q

    from xtune.export.hf_to_gguf import storage_type

    assert storage_type("blk.0.attn_norm.weight", (64,), "q4_0", "output.weight") == Q.F32
    assert storage_type("blk.0.attn_q.weight", (64, 64), "q8_0", "output.weight") == Q.Q8_0
    assert storage_type("blk.0.attn_q.weight", (64, 48), "q8_0", "output.weight") == Q.F16
    assert storage_type("blk.0.attn_q.weight", (64, 64), "q4_0", "output.weight") == Q.Q4_0
    assert storage_type("output.weight", (400, 64), "q4_0", "output.weight") == Q.Q8_0
    assert storage_type("token_embd.weight", (400, 64), "bf16", "output.weight") == Q.BF16


@pytest.mark.parametrize("model_type, settings, message", [
    ("internlm2", {}, "architecture 'internlm2'"),
    ("mixtral", {}, "architecture 'mixtral'"),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
     "RoPE scaling 'yarn'"),
])
def test_an_architecture_xtune_cannot_write_is_refused_by_name(model_type, settings, message):
    from types import SimpleNamespace

    from xtune.export.gguf_arch import gguf_arch

    with pytest.raises(UsageError, match=message):
        gguf_arch(SimpleNamespace(model_type=model_type, architectures=[f"{model_type}ForCausalLM"],
                                  **settings))


def test_a_reward_model_is_refused_as_gguf(tmp_path, capsys):
    """A full reward model (a sequence classifier) is refused from its config alone, before any weight is
    read, and nothing is written (adapters: tests/test_preference_train.py)."""
    folder = tmp_path / "reward"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "hidden_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 64}))
    out = tmp_path / "model.gguf"
    assert main(["convert", "hf_to_gguf", str(folder), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a reward model" in err[0] and "xtune reward" in err[0], err
    assert not out.exists()


# ------------------------------------------------------------------------- tiny models, integration
ARCHITECTURES = {  # model_type -> settings for a tiny random model that transformers' reader rebuilds as is
    "llama": dict(num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=None),
    "qwen2": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    # the reader takes head_dim 128 and the KV heads from Qwen3's defaults
    "qwen3": dict(num_attention_heads=2, num_key_value_heads=2, head_dim=128, rms_norm_eps=1e-6),
    "gemma2": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256),
    "phi3": dict(num_attention_heads=4, num_key_value_heads=4, pad_token_id=0),
}


def _tiny_model_dir(tmp_path, model_type: str, hidden: int = 32, **settings):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = build_tokenizer()
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=hidden,
                                  intermediate_size=2 * hidden, num_hidden_layers=2,
                                  max_position_embeddings=256, bos_token_id=1, eos_token_id=2, **settings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms away from their all-ones start, so that a missed +1 or permutation shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path / f"tiny-{model_type}"  # (a file named exactly "mistral" trips the reader)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer



@pytest.mark.integration
@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_every_architecture_reads_back_with_the_source_logits(tmp_path, model_type):
    from xtune.export.gguf_check import compare
    from xtune.export.hf_to_gguf import hf_to_gguf

    folder, model, tokenizer = _tiny_model_dir(tmp_path, model_type, **ARCHITECTURES[model_type])
    out = hf_to_gguf(str(folder), tmp_path / "model.gguf", outtype="f32", registry=get_registry())
    check = compare(model, tokenizer, out)
    assert check.max_abs_diff < 1e-4 and check.top1_agreement == 1.0, check.summary()
    assert check.same_token_ids and check.same_chat_template


@pytest.mark.integration
def test_gemma_norms_are_stored_plus_one_and_its_output_is_the_embedding(tmp_path):
    import numpy as np

    from xtune.export.hf_to_gguf import hf_to_gguf

    folder, model, _ = _tiny_model_dir(tmp_path, "gemma", num_attention_heads=2, num_key_value_heads=1,
                                       head_dim=16)
    reader, fields = _gguf_fields(hf_to_gguf(str(folder), tmp_path / "gemma.gguf", outtype="f32",
                                             registry=get_registry()))
    tensors = {t.name: t for t in reader.tensors}
    assert fields["general.architecture"] == "gemma" and "output.weight" not in tensors
    assert fields["gemma.attention.key_length"] == 16
    norm = model.model.layers[0].input_layernorm.weight.detach().numpy()
    assert np.allclose(tensors["blk.0.attn_norm.weight"].data, norm + 1)


@pytest.mark.integration
@pytest.mark.parametrize("outtype, tolerance", [("q8_0", 0.01), ("q4_0", 0.2)])
def test_quantised_types_are_stored_as_planned_and_dequantise_close_to_the_source(tmp_path, outtype,
                                                                                   tolerance):
    import torch
    from gguf import GGMLQuantizationType as Q
    from transformers import AutoModelForCausalLM

    from xtune.export.hf_to_gguf import hf_to_gguf

    folder, model, _ = _tiny_model_dir(tmp_path, "qwen2", hidden=64, **ARCHITECTURES["qwen2"])
    out = hf_to_gguf(str(folder), tmp_path / f"{outtype}.gguf", outtype=outtype, registry=get_registry())
    reader, fields = _gguf_fields(out)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == types["blk.0.attn_q.bias"] == Q.F32
    assert types["blk.0.ffn_down.weight"] == Q[outtype.upper()]
    assert types["token_embd.weight"] == Q.Q8_0  # tied: it is the output projection too
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, dtype=torch.float32)
    want, got = model.state_dict(), loaded.state_dict()
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.k_proj.weight"):
        error = (want[name] - got[name]).abs().max() / want[name].abs().max()
        assert error < tolerance, (name, float(error))


@pytest.mark.integration
def test_tiny_llama2_with_its_sentencepiece_vocab_reads_back_in_f16(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xtune.export.gguf_check import compare

    source = shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    out = tmp_path / "tiny.gguf"
    assert main(["convert", "hf_to_gguf", str(source), str(out), "--outtype", "f16"]) == 0
    _, fields = _gguf_fields(out)
    assert fields["general.file_type"] == 1 and fields["llama.rope.dimension_count"] == 4
    check = compare(AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source), out)
    assert check.max_abs_diff < 1e-3 and check.same_token_ids, check.summary()


@pytest.mark.integration
def test_refusals_print_one_line_and_leave_nothing_behind(tmp_path, capsys, monkeypatch):
    from xtune.export import hf_to_gguf as module

    folder, _, _ = _tiny_model_dir(tmp_path, "llama")
    existing = tmp_path / "old.gguf"
    existing.write_text("keep me")
    capsys.readouterr()
    cases = [([str(folder), str(existing)], "already exists"),
             ([str(folder), str(tmp_path / "model.bin")], "must end in .gguf"),
             ([str(folder), str(tmp_path / "x.gguf"), "--adapter", str(folder)], "not a PEFT adapter folder"),
             ([str(folder), str(folder / "x.gguf")], "would destroy the input")]
    for argv, expect in cases:
        assert main(["convert", "hf_to_gguf", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ") and expect in err[0]
    monkeypatch.setattr(module.PlannedTensor, "encode", lambda self, config, arch: 1 / 0)
    assert main(["convert", "hf_to_gguf", str(folder), str(existing), "--force"]) == 1
    assert existing.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.gguf", "tiny-llama"]


# ----------------------------------------------------------------------------------- SmolLM2, CI
@pytest.fixture(scope="module")
def smollm2_adapter(smollm2, tmp_path_factory):
    """A LoRA adapter on SmolLM2 with small random updates (what a short fine-tune leaves), saved as
    `xtune convert pth_to_hf` saves one: peft folder, tokenizer with the recipe's chat template, card."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xtune.export.pth_to_hf import save_hf
    from xtune.plugins import get_registry

    model = AutoModelForCausalLM.from_pretrained(smollm2)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.01)
    out = tmp_path_factory.mktemp("smollm2") / "adapter"
    save_hf(peft_model, AutoTokenizer.from_pretrained(smollm2), out, uses_peft=True, registry=get_registry(),
            info={"recipe": "smollm2_135m_instruct_lora_self_cognition_e3",
                  "prompt_template": "smollm2_chat"})
    return out


# f16 with --adapter is opt-in (slow) to keep CI short; q8_0 from the adapter folder alone runs in CI
@pytest.mark.integration
@pytest.mark.parametrize("outtype", [pytest.param("f16", marks=pytest.mark.slow), "q8_0"])
def test_smollm2_with_an_adapter_exports_to_f16_and_q8_0_that_transformers_reads_back(
        smollm2, smollm2_adapter, tmp_path, outtype):
    from xtune.export.gguf_check import compare
    from xtune.export.hf_to_gguf import load_source

    merged, tokenizer, _ = load_source(str(smollm2), str(smollm2_adapter), "auto", "auto",
                                       registry=get_registry())
    sources = {"f16": [str(smollm2), "--adapter", str(smollm2_adapter)],
               "q8_0": [str(smollm2_adapter)]}  # an adapter folder alone names its base
    out = tmp_path / f"smollm2-{outtype}.gguf"
    assert main(["convert", "hf_to_gguf", *sources[outtype], str(out), "--outtype", outtype]) == 0
    check = compare(merged, tokenizer, out)
    print(outtype, f"{out.stat().st_size / 2**20:.1f} MiB", check.summary())
    assert check.same_token_ids and check.same_chat_template, check.summary()
    if outtype == "f16":
        assert check.max_abs_diff < 1e-3, check.summary()
    else:
        assert check.next_token_agreement == 1.0 and check.top1_agreement > 0.95, check.summary()


# ------------------------------------------------------------------------------ llama.cpp, opt-in
LLAMA_CPP_VERSION = "0.3.36"


@pytest.fixture(scope="session")
def llama_cpp():
    """llama-cpp-python, built from its PyPI sdist once into the user's xtune cache (13 min on 2 cores)."""
    import importlib
    import subprocess
    import sys

    from conftest import USER_BUILDS

    target = USER_BUILDS / f"llama-cpp-python-{LLAMA_CPP_VERSION}"
    if not (target / "llama_cpp").is_dir():
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
               f"llama-cpp-python=={LLAMA_CPP_VERSION}", "diskcache"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"llama-cpp-python could not be built: {done.stderr.strip()[-300:]}")
    sys.path.insert(0, str(target))
    return importlib.import_module("llama_cpp")


@pytest.mark.slow
def test_llama_cpp_generates_what_transformers_generates_after_the_demo(llama_cpp, smollm2, tmp_path):
    """The demo's fine-tune (quick), merged, exported: llama.cpp's greedy tokens are transformers' tokens."""
    import subprocess
    import sys

    import torch
    from conftest import REPO
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = tmp_path / "demo"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), "--quick", "--base", str(smollm2),
                           "--work-dir", str(work)], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    merged = work / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        want = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids):].tolist()
    want = want[:-1] if want[-1:] == [tokenizer.eos_token_id] else want  # llama.cpp's loop stops before EOS
    for outtype, agree in (("f16", len(want)), ("q8_0", 8)):
        out = tmp_path / f"merged-{outtype}.gguf"
        assert main(["convert", "hf_to_gguf", str(merged), str(out), "--outtype", outtype]) == 0
        llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, verbose=False, seed=0)
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        got = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if token == llm.token_eos() or len(got) >= len(want):
                break
            got.append(token)
        print(outtype, "transformers", want, "llama.cpp", got)
        assert got[:agree] == want[:agree], (outtype, tokenizer.decode(got), tokenizer.decode(want))


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer, vocab_file", [(None, "llama-spm"), ("hf_llama3_1", "llama-bpe"),
                                                   ("hf_qwen2_5", "qwen2")])
def test_llama_cpp_tokenizes_our_files_as_its_own_test_vectors_say(llama_cpp, tmp_path, tokenizer,
                                                                   vocab_file):
    """llama.cpp's tokenizer test vectors (`ggml-vocab-*.gguf.inp/.out`, made by its own converter), run
    through llama.cpp on a file xtune wrote for a model with that tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from xtune.export.hf_to_gguf import hf_to_gguf

    if tokenizer is None:  # the tiny Llama-2 has the real Llama-2 vocabulary
        source = shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    else:
        tok = AutoTokenizer.from_pretrained(shared_path("reference", "tokenizers", tokenizer))
        config = AutoConfig.for_model("qwen2" if "qwen" in tokenizer else "llama", vocab_size=len(tok),
                                      hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2)
        source = tmp_path / f"tiny-{vocab_file}"
        AutoModelForCausalLM.from_config(config).save_pretrained(source)
        tok.save_pretrained(source)
    out = hf_to_gguf(str(source), tmp_path / "model.gguf", outtype="f32", registry=get_registry())
    texts = shared_path(*LLAMACPP_VOCAB, f"ggml-vocab-{vocab_file}.gguf.inp").read_text(encoding="utf-8")
    expected = shared_path(*LLAMACPP_VOCAB, f"ggml-vocab-{vocab_file}.gguf.out").read_text(encoding="utf-8")
    llm = llama_cpp.Llama(model_path=str(out), vocab_only=True, verbose=False)
    pairs = list(zip(texts.split("\n__ggml_vocab_test__\n"), expected.split("\n"), strict=False))
    wrong = [text for text, ids in pairs
             if llm.tokenize(text.encode(), add_bos=False, special=False) != [int(i) for i in ids.split()]]
    llm.close()
    assert len(pairs) > 40 and not wrong, wrong[:3]
