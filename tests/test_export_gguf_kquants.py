"""GGUF k-quants (`--outtype q4_k_m` and kin): llama.cpp's encoders and mixes, checked against llama.cpp.

The `gguf` package dequantises every k-quant type but quantises none, so the bytes are checked against
llama.cpp itself: digests of its reference encoders' output on a fixed tensor (recorded from
llama-cpp-python 0.3.36's `quantize_row_qN_K_ref`) and, where its library is in the user's build cache,
the encoders called directly. The per-tensor types are llama.cpp's own choices for two model shapes
(recorded from `llama_model_quantize`). The opt-in slow tests quantise whole files with llama.cpp.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from test_export_gguf import llama_cpp  # noqa: F401  (a fixture: the opt-in llama-cpp-python build)
from test_export_helpers import tiny_model_dir

from xtune.cli.main import main

# sha256 (first 16 hex digits) of llama.cpp's bytes for _sample(), and the RMSE its dequantisation gives
LLAMA_CPP = {"Q2_K": ("bb6166318c02825f", 6.2948e-03), "Q3_K": ("4cae4ff7ff945a2b", 3.9091e-03),
             "Q4_K": ("a346c841071c3149", 1.6074e-03), "Q5_K": ("ababf9ce54049bb4", 8.3074e-04),
             "Q6_K": ("944c67ef506497df", 4.6157e-04)}
KQUANTS = list(LLAMA_CPP)


def _sample() -> np.ndarray:
    """8 rows of 1024 values, exact on every platform, with outliers, a zero super-block, an all-positive
    one and a sub-block of denormal-small values."""
    i = np.arange(8 * 1024, dtype=np.int64)
    x = (((i * 7919) % 1009) - 504) / 20000.0
    x[::97] *= 8
    x = x.reshape(8, 1024).astype(np.float32)
    x[1, :256] = 0
    x[2, 256:512] = np.abs(x[2, 256:512])
    x[3, :16] = 1e-20
    return x


def _qtype(name):
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[name]


@pytest.mark.parametrize("name", KQUANTS)
def test_blocks_are_llama_cpps_bytes_and_gguf_reads_them_back(name):
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    from xtune.export.gguf_kquants import quantize_k

    x, qtype = _sample(), _qtype(name)
    data = quantize_k(x, qtype)
    assert data.dtype == np.uint8 and data.shape == (8, 1024 // 256 * GGML_QUANT_SIZES[qtype][1])
    digest, rmse = LLAMA_CPP[name]
    assert hashlib.sha256(data.tobytes()).hexdigest()[:16] == digest
    back = dequantize(data, qtype)
    assert back.shape == x.shape and np.isfinite(back).all()
    assert np.sqrt(((back - x) ** 2).mean()) == pytest.approx(rmse, rel=1e-3)
    assert not back[1, :256].any()  # a zero super-block stays exactly zero
    assert np.abs(back - x).max() < 0.25 * np.abs(x).max()


def test_error_falls_with_every_extra_bit():
    from gguf.quants import dequantize

    from xtune.export.gguf_kquants import quantize_k

    weights = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32) * 0.02
    rmse = [float(np.sqrt(((dequantize(quantize_k(weights, _qtype(n)), _qtype(n)) - weights) ** 2).mean()))
            for n in KQUANTS]
    assert rmse == sorted(rmse, reverse=True), rmse  # Q2_K worst ... Q6_K best
    # about half the error per extra bit, from ~2.6 bits a weight (Q2_K) to 6.6 (Q6_K)
    assert rmse[-1] < 0.003 * 0.02 * 16 and rmse[0] < 0.02 * 0.4


def test_chunks_on_threads_give_the_bytes_of_one_pass(monkeypatch):
    import xtune.export.gguf_kquants as kquants

    x = np.random.default_rng(2).standard_normal((40, 512)).astype(np.float32)
    whole = kquants.quantize_k(x, _qtype("Q4_K"))
    monkeypatch.setattr(kquants, "_CHUNK", 7)  # 80 super-blocks in 12 chunks
    assert np.array_equal(kquants.quantize_k(x, _qtype("Q4_K")), whole)


def test_rows_that_are_not_whole_super_blocks_are_refused():
    from xtune.export.gguf_kquants import quantize_k

    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_k(np.zeros((2, 576), np.float32), _qtype("Q4_K"))


@pytest.fixture(scope="module")
def ggml_base():
    """llama.cpp's ggml library from the opt-in llama-cpp-python build, when it is there (not built here)."""
    import ctypes

    from conftest import USER_BUILDS

    found = sorted(USER_BUILDS.glob("llama-cpp-python-*/lib/libggml-base.so"))
    if not found:
        pytest.skip("no llama-cpp-python build in the xtune cache (tests/test_export_gguf.py builds one)")
    return ctypes.CDLL(str(found[-1]))


@pytest.mark.parametrize("name", KQUANTS)
def test_blocks_equal_llama_cpps_reference_encoder_on_gaussian_weights(ggml_base, name):
    import ctypes

    from gguf import GGML_QUANT_SIZES

    from xtune.export.gguf_kquants import quantize_k

    x = np.random.default_rng(1).standard_normal((32, 768)).astype(np.float32) * 0.03
    x[0, :32] = 0.5  # a constant sub-block
    qtype = _qtype(name)
    want = np.zeros(x.size // 256 * GGML_QUANT_SIZES[qtype][1], np.uint8)
    encoder = getattr(ggml_base, f"quantize_row_{name[:2].lower()}_K_ref")
    encoder(x.ctypes.data_as(ctypes.c_void_p), want.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
    assert np.array_equal(quantize_k(x, qtype).reshape(-1), want)


# ------------------------------------------------------------------------------------------ the mixes
def _tensor_names(n_layer: int, hidden: int, ffn: int, kv: int, tied: bool) -> dict:
    shapes = {"token_embd.weight": (400, hidden), "output_norm.weight": (hidden,)}
    if not tied:
        shapes["output.weight"] = (400, hidden)
    for i in range(n_layer):
        for part, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)),
                            ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn)), ("attn_norm", (hidden,))):
            shapes[f"blk.{i}.{part}.weight"] = shape
    return shapes


def _layers(types: dict, part: str, n_layer: int) -> str:
    return " ".join(types[f"blk.{i}.{part}.weight"].name for i in range(n_layer))


# llama.cpp's choices (llama_model_quantize, llama-cpp-python 0.3.36) for a 16-layer Llama, hidden 256,
# 4 query heads per KV head, untied output: the layers where attn_v / ffn_down differ from the base type
MORE = "Q6_K Q6_K {b} {b} Q6_K {b} {b} Q6_K {b} {b} Q6_K {b} {b} Q6_K Q6_K Q6_K"
TINY16 = {
    "q4_k_m": ("Q4_K", MORE.format(b="Q4_K"), MORE.format(b="Q4_K"), "Q4_K"),
    "q5_k_m": ("Q5_K", MORE.format(b="Q5_K"), MORE.format(b="Q5_K"), "Q5_K"),
    "q4_k_s": ("Q4_K", "Q5_K " * 4 + "Q4_K " * 11 + "Q4_K", "Q5_K Q5_K" + " Q4_K" * 14, "Q4_K"),
    "q3_k_m": ("Q3_K", "Q5_K Q5_K" + " Q4_K" * 14, "Q5_K" + " Q4_K" * 15, "Q4_K"),
    "q2_k": ("Q2_K", " ".join(["Q4_K"] * 16), " ".join(["Q3_K"] * 16), "Q3_K"),
    "q6_k": ("Q6_K", " ".join(["Q6_K"] * 16), " ".join(["Q6_K"] * 16), "Q6_K"),
}


@pytest.mark.parametrize("outtype", list(TINY16))
def test_mix_gives_the_tensors_llama_cpp_gives_on_a_16_layer_llama(outtype):
    from xtune.export.gguf_mix import MixModel, kquant_type

    model = MixModel(n_layer=16, n_gqa=4, tied=False)
    types = {n: kquant_type(n, s, outtype, model) for n, s in _tensor_names(16, 256, 512, 64, False).items()}
    base, attn_v, ffn_down, attn_output = TINY16[outtype]
    assert _layers(types, "attn_v", 16) == attn_v.strip()
    assert _layers(types, "ffn_down", 16) == ffn_down.strip()
    assert _layers(types, "attn_output", 16) == " ".join([attn_output] * 16)
    assert _layers(types, "attn_q", 16) == _layers(types, "ffn_up", 16) == " ".join([base] * 16)
    assert types["token_embd.weight"].name == base and types["output.weight"].name == "Q6_K"
    assert types["output_norm.weight"].name == types["blk.3.attn_norm.weight"].name == "F32"


def test_rows_of_576_fall_back_as_llama_cpp_does_for_smollm2():
    """SmolLM2-135M (hidden 576, ffn 1536, tied): only ffn_down's 1536-value rows take k-quants."""
    from xtune.export.gguf_mix import MixModel, kquant_type

    model = MixModel(n_layer=30, n_gqa=3, tied=True)
    shapes = _tensor_names(30, 576, 1536, 192, True)
    types = {n: kquant_type(n, s, "q4_k_m", model) for n, s in shapes.items()}
    more = [i for i in range(30) if i < 3 or i >= 26 or (i - 3) % 3 == 2]
    assert types["token_embd.weight"].name == "Q8_0"  # the tied output: Q6_K wanted, rows not whole blocks
    assert [i for i in range(30) if types[f"blk.{i}.ffn_down.weight"].name == "Q6_K"] == more
    assert {types[f"blk.{i}.ffn_down.weight"].name for i in range(30) if i not in more} == {"Q4_K"}
    assert [i for i in range(30) if types[f"blk.{i}.attn_v.weight"].name == "Q8_0"] == more  # Q6_K's fallback
    assert {types[f"blk.{i}.attn_q.weight"].name for i in range(30)} == {"Q5_0"}  # Q4_K's fallback
    assert kquant_type("blk.0.ffn_up.weight", (1536, 576), "q5_k_m", model).name == "Q5_1"
    assert kquant_type("blk.0.ffn_up.weight", (1536, 576), "q2_k", model).name == "Q4_0"
    assert kquant_type("blk.0.ffn_up.weight", (8, 20), "q6_k", model).name == "F16"


# ---------------------------------------------------------------------------------------- end to end
@pytest.mark.integration
def test_convert_writes_a_q4_k_m_file_the_gguf_reader_dequantises(tmp_path):
    import gguf
    import torch
    from gguf.quants import dequantize
    from safetensors.torch import load_file

    source = tiny_model_dir(tmp_path / "tiny", hidden=256)
    out = tmp_path / "tiny-q4_k_m.gguf"
    assert main(["convert", "hf_to_gguf", str(source), str(out), "--outtype", "q4_k_m"]) == 0
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    tensors = {t.name: t for t in reader.tensors}
    types = {n: t.tensor_type.name for n, t in tensors.items()}
    # 2 layers: use_more_bits picks layer 1 only; the untied output is Q6_K
    assert [types[f"blk.{i}.ffn_down.weight"] for i in (0, 1)] == ["Q4_K", "Q6_K"]
    assert [types[f"blk.{i}.attn_v.weight"] for i in (0, 1)] == ["Q4_K", "Q6_K"]
    assert types["output.weight"] == "Q6_K" and types["blk.0.attn_q.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    weights = load_file(str(source / "model.safetensors"))
    for name, hf_name in (("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
                          ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight")):
        want = weights[hf_name].to(torch.float32).numpy()
        got = dequantize(tensors[name].data, tensors[name].tensor_type)
        assert got.shape == want.shape
        # Q4_K / Q6_K on Gaussian weights: about 7% / 2% of their RMS, as llama.cpp's own (same bytes)
        assert np.sqrt(((got - want) ** 2).mean()) < 0.08 * np.sqrt((want ** 2).mean())


def test_the_demo_can_write_its_gguf_as_q4_k_m():
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "tools"))
    import demo

    assert demo.parse_args([]).gguf_outtype == "q8_0"  # the closest to transformers on SmolLM2 (docs)
    assert demo.parse_args(["--gguf-outtype", "q4_k_m"]).gguf_outtype == "q4_k_m"


# ------------------------------------------------------------------------- llama.cpp itself (opt-in)
def _llama_quantize(lib, src, dst, outtype: str) -> None:
    import ctypes

    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{outtype.upper()}")
    params.nthread = 1
    assert lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


@pytest.mark.slow
def test_llama_cpps_quantize_of_the_same_f16_file_has_the_same_tensors(llama_cpp, tmp_path):  # noqa: F811
    """An 8-layer Llama with 4 query heads per KV head and fp16-exact weights (llama-quantize reads the f16
    file): every k-quant mix gives the same type for every tensor and the same bytes."""
    import gguf
    import torch
    from test_export_helpers import build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=1,
                         tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, max_position_embeddings=256)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    for param in model.parameters():
        param.data = param.data.half().float()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    f16 = tmp_path / "f16.gguf"
    assert main(["convert", "hf_to_gguf", str(tmp_path / "model"), str(f16), "--outtype", "f16"]) == 0
    for outtype in ("q4_k_m", "q5_k_m", "q6_k", "q4_k_s", "q5_k_s", "q3_k_m", "q2_k"):
        ours, theirs = tmp_path / f"ours-{outtype}.gguf", tmp_path / f"llama-{outtype}.gguf"
        assert main(["convert", "hf_to_gguf", str(tmp_path / "model"), str(ours), "--outtype", outtype]) == 0
        _llama_quantize(llama_cpp, f16, theirs, outtype)
        a, b = gguf.GGUFReader(str(ours)), gguf.GGUFReader(str(theirs))
        assert a.fields["general.file_type"].contents() == b.fields["general.file_type"].contents()
        want = {t.name: (t.tensor_type, bytes(t.data)) for t in b.tensors}
        assert {t.name: (t.tensor_type, bytes(t.data)) for t in a.tensors} == want, outtype


@pytest.mark.slow
def test_llama_cpp_runs_smollm2_q4_k_m_like_its_own_and_close_to_transformers(llama_cpp, smollm2,  # noqa: F811
                                                                             tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    f16, ours, theirs = tmp_path / "f16.gguf", tmp_path / "q4_k_m.gguf", tmp_path / "llama-q4_k_m.gguf"
    assert main(["convert", "hf_to_gguf", str(smollm2), str(f16), "--outtype", "f16"]) == 0
    assert main(["convert", "hf_to_gguf", str(smollm2), str(ours), "--outtype", "q4_k_m"]) == 0
    _llama_quantize(llama_cpp, f16, theirs, "q4_k_m")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        full = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0].tolist()
        want = model(torch.tensor([full])).logits[0].argmax(-1).numpy()
    runs = {}
    for path in (ours, theirs):
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False, logits_all=True, seed=0)
        llm.eval(full)
        forced = np.array(llm.scores[:len(full)]).argmax(-1)
        llm.reset()
        greedy = []
        for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if token == llm.token_eos() or len(greedy) >= 16:
                break
            greedy.append(token)
        runs[path] = (forced, greedy)
    assert np.array_equal(runs[ours][0], runs[theirs][0]) and runs[ours][1] == runs[theirs][1]
    forced, greedy = runs[ours]
    continuation = range(len(ids) - 1, len(full) - 1)
    agreement = np.mean([forced[i] == want[i] for i in continuation])
    print("q4_k_m: teacher-forced top-1 agreement", agreement, tokenizer.decode(greedy))
    assert greedy[:2] == full[len(ids):len(ids) + 2] and agreement >= 0.75  # measured 0.85 (docs)
