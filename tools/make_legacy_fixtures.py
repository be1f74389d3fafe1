#!/usr/bin/env python3
"""Generate tests/assets/legacy/: tiny "original-layout" checkpoints of the legacy trust_remote_code
families (InternLM v1, InternLM2/2.5, ChatGLM3, Baichuan-7B, Baichuan2-7B/13B) and their golden outputs.

Everything here is produced by each family's OWN hub modelling/tokenization code, running under
transformers 4.x in a throwaway venv (tools/legacy_fixtures_venv.sh); xtune (transformers 5) later loads
the checkpoints through native architectures and compares against the golden logits.

    bash tools/legacy_fixtures_venv.sh
    /work/tf4venv/bin/python tools/make_legacy_fixtures.py --shared ../shared --out tests/assets/legacy

The hub code is read from <shared>/reference/remote_code/<family>/ and copied, at run time only, into a
temporary directory outside the repo (licences: the .py files must never land in the repo). Nothing is
downloaded. See tests/assets/legacy/README.md for the layout and every workaround.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

# Must be set before transformers is imported: dynamic modules go to a throwaway cache, nothing is fetched.
_TMP_ROOT = Path(tempfile.mkdtemp(prefix="xtune_legacy_fixtures_"))
os.environ["HF_MODULES_CACHE"] = str(_TMP_ROOT / "hf_modules")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sentencepiece as spm  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402
from transformers.dynamic_module_utils import get_class_from_dynamic_module  # noqa: E402

if not transformers.__version__.startswith("4."):
    shutil.rmtree(_TMP_ROOT, ignore_errors=True)
    sys.exit(
        f"run this with the transformers 4.x venv (tools/legacy_fixtures_venv.sh); got "
        f"{transformers.__version__}"
    )

SEED = 20240611
HIDDEN, LAYERS, HEADS, FFN, MAX_POS = 64, 2, 4, 128, 256
BATCH, SEQ, PROMPT, NEW_TOKENS = 2, 24, 10, 8

# --------------------------------------------------------------------------------------------------------
# Tiny SentencePiece tokenizers
# --------------------------------------------------------------------------------------------------------

_EN = """\
The quick brown fox jumps over the lazy dog.
Hello world! This is a small test of the tokenizer.
Large language models are trained on a lot of text from the internet.
We fine-tune the model on a chat dataset with a user and an assistant.
The assistant answers the question of the user in a helpful way.
Please write a short poem about the sea and the sky.
How are you today? I am fine, thank you very much.
The weather is nice, so we will go to the park this afternoon.
Machine learning is a field of computer science and statistics.
A tokenizer splits the input text into tokens, and each token has an id.
The model predicts the next token given all of the previous tokens.
Training uses gradient descent with a small learning rate and a warmup.
She reads a book in the library every morning before work.
They played football in the garden until the sun went down.
Python is a popular programming language for data science.
Can you help me translate this sentence into Chinese?
The answer is correct, but the explanation could be clearer.
In the beginning there was nothing, and then there was light.
Open the file, read every line, and count the words in it.
The meeting starts at nine and ends at half past ten.
My phone number is 555 0123 and my room is 42.
The year 2023 had 365 days, and 2024 has 366 days.
Version 3.14 of the library was released on 2024-06-11.
He paid 19.99 dollars for 3 books and 2 pens.
user: hi there
assistant: hello, how can I help you?
system: you are a helpful assistant.
"""

_ZH = """\
你好，世界！
我们今天去公园散步。
今天天气很好，我们一起去学校吧。
这是一个用于测试分词器的小语料。
大语言模型在很多中文和英文文本上进行训练。
请写一首关于大海和天空的短诗。
你好吗？我很好，谢谢你。
我喜欢在图书馆里看书和学习。
人工智能是计算机科学的一个重要方向。
他每天早上六点起床，然后去跑步。
北京是中国的首都，上海是一个大城市。
我们的模型可以回答用户的问题。
学习机器学习需要数学和编程的基础。
这个问题的答案是正确的，但是解释不够清楚。
请把这句话翻译成英文。
春天来了，花都开了，小鸟在树上唱歌。
我们明天下午三点在会议室开会。
用户：你好
助手：你好，有什么可以帮你的吗？
"""

_CODE = """\
def add(a, b):
    return a + b

for i in range(10):
    print(i * 2)

class Model:
    def __init__(self, name):
        self.name = name
\tif x > 0:
\t\treturn x
"""


_CHATS = [
    "user\nHello, who are you?\nassistant\nI am a helpful assistant.\n",
    "用户\n你好，你是谁？\n助手\n我是一个有用的助手。\n\n",
    "Question:\n\nWhat is 2 + 2?\n\nAnswer: 4\n",
]


def _corpus() -> list[str]:
    lines = [ln for ln in (_EN + _ZH + _CODE).split("\n") if ln.strip()]
    # repeat with small deterministic variations so BPE has frequencies to work with
    out = []
    for rep in range(6):
        for i, ln in enumerate(lines):
            out.append(ln)
            if (i + rep) % 3 == 0:
                out.append(f"  {ln}  ")
            if (i + rep) % 5 == 0:
                out.append(f"{ln} {rep * 7 + i}")
        # multi-line samples, so newline pieces get learned as in the real tokenizers
        out.append(_CODE)
        out.extend(_CHATS)
    return out


# Baichuan-7B's tokenizer.model (llama.cpp ggml-vocab-baichuan.gguf, ids 3..92) holds these user-defined
# symbols before <reserved_0> (id 93) and the 256 byte pieces (ids 393..648).
_BAICHUAN_V1_PREFIX = (
    ["<SEP>", "<CLS>", "\n", "\t"]
    + [
        f"{o}{t}{c}"
        for t in (
            "h2",
            "br",
            "strong",
            "h1",
            "p",
            "h5",
            "h3",
            "table",
            "li",
            "tr",
            "h4",
            "tbody",
            "img",
            "b",
            "td",
        )
        for o, c in (("<", ">"), ("<", "/>"), ("</", ">"))
    ]
    + list("0123456789")
    + list("０１２３４５６７８９")
    + [
        "，",
        "。",
        "！",
        "？",
        "、",
        "：",
        "￥",
        ".",
        "!",
        "?",
        "《",
        "》",
        "【",
        "】",
        "『",
        "』",
        "```",
        "<!--",
        "-->",
        "---",
        "<!DOCTYPE>",
    ]
)
assert len(_BAICHUAN_V1_PREFIX) == 90, len(_BAICHUAN_V1_PREFIX)

TOKENIZERS = {
    # InternLM v1 (V7_sft.model): identity normaliser, no dummy prefix, whitespace kept, digits split,
    # byte fallback; <eoh>, <eoa>, <TOKENS_UNUSED_2..140> are USER_DEFINED pieces appended at the END.
    "internlm": dict(
        learned=350,
        add_dummy_prefix=False,
        split_digits=True,
        user_defined=[],
        appended=["<eoh>", "<eoa>"] + [f"<TOKENS_UNUSED_{i}>" for i in range(2, 141)],
    ),
    # InternLM2 (92544 pieces): no dummy prefix, byte fallback, [UNUSED_TOKEN_0..146] at the END
    # (ids 92397..92543); tokenizer_config.json re-labels the last six ids as <|plugin|> ... <|im_start|>.
    "internlm2": dict(
        learned=350,
        add_dummy_prefix=False,
        split_digits=True,
        user_defined=[],
        appended=[f"[UNUSED_TOKEN_{i}]" for i in range(147)],
    ),
    # ChatGLM3 (64789 pieces): dummy prefix ("▁" prepended), byte fallback; its 9 special tokens
    # ([MASK] [gMASK] [sMASK] sop eop <|system|> <|user|> <|assistant|> <|observation|>) are NOT in the
    # .model: tokenization_chatglm.py appends them after the sp vocab.
    "chatglm3": dict(learned=400, add_dummy_prefix=True, split_digits=True, user_defined=[], appended=[]),
    # Baichuan-7B (64000 pieces): user-defined symbols at ids 3..392 (<reserved_102>/<reserved_103> = 195/196,
    # the chat user/assistant tokens), then bytes, then BPE pieces.
    "baichuan": dict(
        learned=300,
        add_dummy_prefix=False,
        split_digits=True,
        appended=[],
        user_defined=_BAICHUAN_V1_PREFIX + [f"<reserved_{i}>" for i in range(300)],
    ),
    # Baichuan2 (125696 pieces): same scheme; generation_config user/assistant ids 195/196 are
    # <reserved_106>/<reserved_107>, so <reserved_0> sits at id 89 (the exact symbols at 3..88 are not
    # published in anything we hold: we reuse Baichuan-7B's first 86).
    "baichuan2": dict(
        learned=300,
        add_dummy_prefix=False,
        split_digits=True,
        appended=[],
        user_defined=_BAICHUAN_V1_PREFIX[:86] + [f"<reserved_{i}>" for i in range(300)],
    ),
}


def _sp_model_pb2():
    # transformers' own copy of sentencepiece_model_pb2 (sentencepiece's copy needs protobuf>=5.26 and
    # the two cannot be loaded into one process).
    from transformers.convert_slow_tokenizer import import_protobuf

    return import_protobuf()


def train_tokenizer(kind: str) -> bytes:
    spec = TOKENIZERS[kind]
    n_meta = 3 + len(spec["user_defined"]) + 256
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=buf,
        model_type="bpe",
        vocab_size=n_meta + spec["learned"],
        byte_fallback=True,
        normalization_rule_name="identity",
        add_dummy_prefix=spec["add_dummy_prefix"],
        remove_extra_whitespaces=False,
        split_digits=spec["split_digits"],
        allow_whitespace_only_pieces=True,
        user_defined_symbols=spec["user_defined"],
        character_coverage=0.98,
        num_threads=1,
        seed_sentencepiece_size=100000,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    model = buf.getvalue()
    if spec["appended"]:
        pb2 = _sp_model_pb2()
        proto = pb2.ModelProto()
        proto.ParseFromString(model)
        for piece in spec["appended"]:
            p = proto.pieces.add()
            p.piece, p.score, p.type = piece, 0.0, pb2.ModelProto.SentencePiece.USER_DEFINED
        model = proto.SerializeToString()
    sp = spm.SentencePieceProcessor(model_proto=model)
    assert sp.get_piece_size() == n_meta + spec["learned"] + len(spec["appended"])
    assert sp.piece_to_id("<0x41>") > 0 and sp.unk_id() == 0 and sp.bos_id() == 1 and sp.eos_id() == 2
    return model


# --------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------

# Baichuan-7B and Baichuan2-7B: no config.json with provenance in shared. Official values (SOURCE.md,
# the configuration classes' defaults, and the hub config.json key layout of the same era).
BAICHUAN7B_CONFIG = {
    "architectures": ["BaiChuanForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_baichuan.BaiChuanConfig",
        "AutoModelForCausalLM": "modeling_baichuan.BaiChuanForCausalLM",
    },
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "baichuan",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "pad_token_id": 0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.29.1",
    "use_cache": True,
    "vocab_size": 64000,
}
BAICHUAN2_7B_CONFIG = {
    "_from_model_config": True,
    "architectures": ["BaichuanForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_baichuan.BaichuanConfig",
        "AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM",
    },
    "tokenizer_class": "BaichuanTokenizer",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_max_length": 4096,
    "model_type": "baichuan",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "pad_token_id": 0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.29.2",
    "use_cache": True,
    "vocab_size": 125696,
    "z_loss_weight": 0,
}

_LLAMA_LIKE = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "intermediate_size": FFN,
}

FIXTURES = {
    "internlm": dict(
        code="internlm",
        hub_id="internlm/internlm-chat-7b (code: internlm/internlm-20b)",
        tokenizer="internlm",
        config={
            **_LLAMA_LIKE,
            "num_key_value_heads": HEADS,
            "max_position_embeddings": MAX_POS,
            "bias": True,
        },
        storage="safetensors",
        notes=[
            "InternLM-Chat-7B style: bias=true (q/k/v/o biases). shared/ holds the internlm-20b config "
            "(bias=false) and code; the 7B hub code differs mainly in that flag."
        ],
    ),
    "internlm_20b": dict(
        code="internlm",
        hub_id="internlm/internlm-20b",
        tokenizer="internlm",
        config={**_LLAMA_LIKE, "num_key_value_heads": HEADS, "max_position_embeddings": MAX_POS},
        storage="safetensors",
        notes=["bias=false, as the shared internlm-20b config."],
    ),
    "internlm2": dict(
        code="internlm2",
        hub_id="internlm/internlm2-chat-7b",
        tokenizer="internlm2",
        config={**_LLAMA_LIKE, "num_key_value_heads": 2, "max_position_embeddings": MAX_POS},
        storage="safetensors",
    ),
    "internlm2_5": dict(
        code="internlm2",
        hub_id="internlm/internlm2_5-7b-chat (code: internlm/internlm2-chat-7b)",
        tokenizer="internlm2",
        config={
            **_LLAMA_LIKE,
            "num_key_value_heads": 2,
            "max_position_embeddings": 16,
            "rope_scaling": {"type": "dynamic", "factor": 2.0},
        },
        storage="safetensors",
        notes=[
            "internlm2_5-7b-chat style: rope_scaling {type: dynamic, factor: 2.0}; "
            "max_position_embeddings=16 "
            "so the 24-token input runs the dynamic-NTK branch (base rescaled for seq_len 24).",
            "Run with the internlm2-chat-7b hub code (March 2024); the internlm2_5 hub revision was not "
            "collected.",
            "The hub's dynamic rope is stateful (inv_freq/cos cache is recomputed in place once seq_len "
            "exceeds "
            "the cached length and never reset), so logits and generation each come from a FRESH load.",
        ],
    ),
    "chatglm3": dict(
        code="chatglm3",
        hub_id="THUDM/chatglm3-6b",
        tokenizer="chatglm3",
        config={
            "num_layers": LAYERS,
            "hidden_size": HIDDEN,
            "num_attention_heads": HEADS,
            "kv_channels": 16,
            "multi_query_group_num": 2,
            "ffn_hidden_size": FFN,
            "seq_length": MAX_POS,
        },
        storage="safetensors-sharded",
        notes=[
            "padded_vocab_size is rounded up to a multiple of 64 above the tokenizer size (sp pieces + 9 "
            "appended specials); embedding rows past the tokenizer are real, trained-looking rows.",
            "The checkpoint holds transformer.rotary_pos_emb.inv_freq (a persistent buffer of the hub code, "
            "fp16 here as in the real checkpoint); the hub forward recomputes the rope table in fp32 and "
            "only "
            "uses that buffer for its dtype/device.",
            "The hub folder has no generation_config.json, so none is kept.",
        ],
    ),
    "baichuan": dict(
        code="baichuan",
        hub_id="baichuan-inc/Baichuan-7B",
        tokenizer="baichuan",
        base_config=BAICHUAN7B_CONFIG,
        config={**_LLAMA_LIKE, "max_position_embeddings": MAX_POS},
        storage="safetensors",
        notes=[
            "No config.json in shared: the official Baichuan-7B values are written into the generator.",
            "modeling_baichuan.py hard-imports xformers (used only by the training branch): a stub xformers "
            "package is put on sys.path while the code loads.",
            "The checkpoint holds model.layers.N.self_attn.rotary_emb.inv_freq (persistent buffer, bf16 "
            "here); "
            "the hub forward uses cos/sin tables computed at init from the exact fp32 inv_freq, so the saved "
            "buffer does not influence the logits (positions < max_position_embeddings).",
            "No Baichuan-7B tokenization code/config in shared: the tokenizer files use the Baichuan2 "
            "tokenization_baichuan.py class (BaichuanTokenizer) and the Baichuan2-7B tokenizer_config "
            "layout.",
        ],
    ),
    "baichuan2_7b": dict(
        code="baichuan2_7b",
        hub_id="baichuan-inc/Baichuan2-7B-Chat",
        tokenizer="baichuan2",
        base_config=BAICHUAN2_7B_CONFIG,
        config={**_LLAMA_LIKE, "max_position_embeddings": MAX_POS, "model_max_length": MAX_POS},
        storage="bin-sharded",
        generation_config="baichuan2_13b",
        notes=[
            "No config.json in shared: the official Baichuan2-7B values are written into the generator.",
            "quantizer.py imports bitsandbytes (needed by transformers' import check, never called): a stub "
            "bitsandbytes package is put on sys.path while the code loads.",
            "generation_config.json mirrors the shared Baichuan2-13B-Chat one (SOURCE.md: same keys).",
            "lm_head is NormHead: the hub code L2-normalises its rows at the first eval forward; the "
            "checkpoint stores the raw (un-normalised) weight, as the real one does.",
        ],
    ),
    "baichuan2_13b": dict(
        code="baichuan2_13b",
        hub_id="baichuan-inc/Baichuan2-13B-Chat",
        tokenizer="baichuan2",
        config={**_LLAMA_LIKE, "model_max_length": MAX_POS},
        storage="safetensors",
        notes=[
            "13B code: ALiBi attention (no rope) + NormHead. No native transformers architecture holds it; "
            "xtune is expected to refuse it. The golden logits are still recorded.",
            "quantizer.py imports bitsandbytes (needed by transformers' import check, never called): a stub "
            "bitsandbytes package is put on sys.path while the code loads.",
            "The real config has gradient_checkpointing=false, which the hub config class stores as the "
            "tuple (False,) (truthy).",
        ],
        alibi=True,
    ),
}

TEST_STRINGS = [
    "Hello world",
    " Hello world",
    "Hello  world   ",
    "   leading spaces and trailing spaces   ",
    "line one\nline two\n\nline four\n",
    "\n\nstarts with two newlines",
    "tabs\tand\t\ttext",
    "def add(a, b):\n    return a + b\n",
    "你好，世界！",
    "我们今天去公园散步。",
    "Mixed 中英文 text with 12345 and 3.14",
    "The year 2024 has 366 days.",
    "emoji 😀 and 🚀 test",
    "café naïve façade",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are "
    "InternLM.<|im_end|>\n<|action_start|><|interpreter|>\nprint(1)<|action_end|>\n",
    "[gMASK]sop<|user|>\n hi<|assistant|>",
    "<|system|>\nYou are ChatGLM3.<|observation|>\n{}",
    "<|User|>:hi<eoh>\n<|Bot|>:hello<eoa>\n",
    "<reserved_106>你好<reserved_107>",
    "<reserved_102>hi<reserved_103>",
    "<s>hello</s>",
    "",
]

# --------------------------------------------------------------------------------------------------------
# Stubs for packages the hub code imports but never uses on this path
# --------------------------------------------------------------------------------------------------------

_XFORMERS_DOC = (
    "Stub (tools/make_legacy_fixtures.py): Baichuan-7B imports xformers.ops; only training uses it."
)
_BNB_DOC = "Stub (tools/make_legacy_fixtures.py): Baichuan2 quantizer.py imports bitsandbytes; never called."
_STUBS = {
    "xformers/__init__.py": f'"""{_XFORMERS_DOC}"""\n',
    "xformers/ops.py": (
        "class LowerTriangularMask:\n"
        "    pass\n\n\n"
        "def memory_efficient_attention(*args, **kwargs):\n"
        "    raise NotImplementedError('xformers stub: training branch not available')\n"
    ),
    "bitsandbytes/__init__.py": f'"""{_BNB_DOC}"""\nfrom . import nn  # noqa: F401\n',
    "bitsandbytes/nn/__init__.py": "from .modules import Int8Params, Params4bit  # noqa: F401\n",
    "bitsandbytes/nn/modules.py": "class Params4bit:\n    pass\n\n\nclass Int8Params:\n    pass\n",
}


@contextlib.contextmanager
def stub_packages(names):
    """Make the named stub packages importable (sys.path) for the duration, then forget them."""
    if not names:
        yield
        return
    root = _TMP_ROOT / ("stubs_" + "_".join(sorted(names)))
    for rel, text in _STUBS.items():
        if rel.split("/")[0] in names:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for mod in list(sys.modules):
            if mod.split(".")[0] in names:
                del sys.modules[mod]


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_counter = [0]


def code_dir_with(fixture_files: Path | None, code: Path, tag: str) -> Path:
    """A fresh temp dir = hub .py files (copied) + the fixture's files (copied). Unique name per call so the
    transformers_modules.<name> package is fresh."""
    _counter[0] += 1
    d = _TMP_ROOT / f"{tag}_{_counter[0]}"
    d.mkdir()
    for f in sorted(code.glob("*.py")):
        shutil.copy2(f, d / f.name)
    if fixture_files is not None:
        for f in sorted(fixture_files.iterdir()):
            if f.is_file():
                shutil.copy2(f, d / f.name)
    return d


def stubs_for(code: str) -> list[str]:
    return {
        "baichuan": ["xformers"],
        "baichuan2_7b": ["bitsandbytes"],
        "baichuan2_13b": ["bitsandbytes"],
    }.get(code, [])


def shrink_config(fx: dict, hub_dir: Path, vocab: int) -> dict:
    base = fx.get("base_config")
    if base is None:
        base = json.loads((hub_dir / "config.json").read_text())
    cfg = json.loads(json.dumps(base))  # deep copy, key order kept
    cfg.update(fx["config"])
    if fx["code"] == "chatglm3":
        cfg["padded_vocab_size"] = vocab
    else:
        cfg["vocab_size"] = vocab
    return cfg


def fill_parameters(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1 and "norm" in name.lower() and name.endswith("weight"):
                vals = 1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32)
            else:
                vals = 0.05 * torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.copy_(vals.to(p.dtype))


def provenance(hub_dir: Path) -> dict:
    lines = [
        ln.strip()
        for ln in (hub_dir / "SOURCE.md").read_text().splitlines()
        if re.search(r"\b[0-9a-f]{40}\b", ln)
    ]
    return {
        "source_md": f"reference/remote_code/{hub_dir.name}/SOURCE.md",
        "lines": lines,
        "files_sha256": {f.name: sha256(f) for f in sorted(hub_dir.glob("*.py"))},
    }


# --------------------------------------------------------------------------------------------------------
# Tokenizer files
# --------------------------------------------------------------------------------------------------------


def write_tokenizer_files(
    fx: dict, out: Path, model_bytes: bytes, shared_rc: Path, real_vocab: int, tiny_vocab: int
) -> None:
    (out / "tokenizer.model").write_bytes(model_bytes)
    kind = fx["tokenizer"]
    src = {
        "internlm": "internlm",
        "internlm2": "internlm2",
        "chatglm3": "chatglm3",
        "baichuan": "baichuan2_7b",
        "baichuan2": fx["code"],
    }[kind]
    tc = json.loads((shared_rc / src / "tokenizer_config.json").read_text())
    if "added_tokens_decoder" in tc:
        remapped = {}
        for k, v in tc["added_tokens_decoder"].items():
            i = int(k)
            remapped[str(i if i < 3 else i - real_vocab + tiny_vocab)] = v
        tc["added_tokens_decoder"] = remapped
    _write_json(out / "tokenizer_config.json", tc)
    stm = shared_rc / src / "special_tokens_map.json"
    if stm.exists():
        _write_json(out / "special_tokens_map.json", json.loads(stm.read_text()))


_TOKENIZER_PATCHES: list[str] = []


def load_hub_tokenizer(load_dir: Path):
    """AutoTokenizer through the hub code (slow class). Baichuan2's tokenization_baichuan.py sets
    self.sp_model only AFTER PreTrainedTokenizer.__init__, which (transformers >= 4.34) calls get_vocab()
    -> AttributeError. If (and only if) that happens, load the sp model before the original __init__ runs
    (what the later hub revisions of the file do: sp_model is loaded before super().__init__) and retry.
    Returns (tokenizer, workaround or None)."""
    tc = json.loads((load_dir / "tokenizer_config.json").read_text())
    ref = tc["auto_map"]["AutoTokenizer"][0]
    try:
        return AutoTokenizer.from_pretrained(str(load_dir), trust_remote_code=True, use_fast=False), None
    except AttributeError as e:
        if "sp_model" not in str(e):
            raise
        cls = get_class_from_dynamic_module(ref, str(load_dir))
        orig_init = cls.__init__

        def __init__(self, vocab_file, *args, **kwargs):
            self.sp_model = spm.SentencePieceProcessor(**(kwargs.get("sp_model_kwargs") or {}))
            self.sp_model.Load(vocab_file)
            orig_init(self, vocab_file, *args, **kwargs)

        cls.__init__ = __init__
        _TOKENIZER_PATCHES.append(f"{ref}: AttributeError: {e}")
        # transformers 4.40 re-executes the module file on every AutoTokenizer call, so the patched class
        # is used directly (the same class AutoTokenizer resolves from tokenizer_config.json's auto_map).
        return cls.from_pretrained(str(load_dir)), (
            f"{ref}.__init__ sets self.sp_model only after PreTrainedTokenizer.__init__, which calls "
            f"get_vocab() under transformers {transformers.__version__} (AttributeError: {e}); the generator "
            "loads the sp model before the original __init__ runs (as the later hub revisions do) and calls "
            "the class directly"
        )


def tokenizer_golden(tok) -> list[dict]:
    out = []
    for text in TEST_STRINGS:
        ids = list(tok.encode(text))
        ids_ns = list(tok.encode(text, add_special_tokens=False))
        entry = {
            "text": text,
            "ids": ids,
            "ids_no_special": ids_ns,
            "tokens": tok.convert_ids_to_tokens(ids),
            "decoded": tok.decode(ids, skip_special_tokens=False),
        }
        if type(tok).__name__ == "ChatGLMTokenizer":
            # ChatGLM3's tokenizer only splits the four role tokens out of raw text when constructed with
            # encode_special_tokens=True (default False: "<|user|>" is tokenised as plain text).
            tok.encode_special_tokens = True
            try:
                entry["ids_encode_special_tokens"] = list(tok.encode(text))
            finally:
                tok.encode_special_tokens = False
        out.append(entry)
    return out


# --------------------------------------------------------------------------------------------------------
# Main per-fixture work
# --------------------------------------------------------------------------------------------------------


def save_weights(model, save_dir: Path, storage: str) -> None:
    if storage == "safetensors":
        model.save_pretrained(save_dir, safe_serialization=True, max_shard_size="1GB")
        return
    safe = storage == "safetensors-sharded"
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for frac in [x / 100 for x in range(50, 100, 2)]:
        shutil.rmtree(save_dir, ignore_errors=True)
        model.save_pretrained(save_dir, safe_serialization=safe, max_shard_size=int(total * frac) + 1)
        pattern = "model-*-of-*.safetensors" if safe else "pytorch_model-*-of-*.bin"
        if len(list(save_dir.glob(pattern))) == 2:
            return
    raise RuntimeError(f"could not shard into exactly 2 files ({storage})")


def load_model(fixture_dir: Path, code: Path, tag: str, code_name: str):
    d = code_dir_with(fixture_dir, code, tag)
    with stub_packages(stubs_for(code_name)):
        model, info = AutoModelForCausalLM.from_pretrained(
            str(d), trust_remote_code=True, torch_dtype=torch.float32, output_loading_info=True
        )
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise RuntimeError(f"{tag}: loading info not clean: {bad}")
    return model.eval()


def make_fixture(name: str, fx: dict, shared: Path, out_root: Path, tok_models: dict, seed: int) -> dict:
    shared_rc = shared / "reference" / "remote_code"
    hub_dir = shared_rc / fx["code"]
    out = out_root / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    # -- tokenizer (needed first: it fixes the vocab size) -----------------------------------------------
    sp_bytes = tok_models[fx["tokenizer"]]
    n_pieces = spm.SentencePieceProcessor(model_proto=sp_bytes).get_piece_size()
    tok_size = n_pieces + (9 if fx["code"] == "chatglm3" else 0)
    vocab = -(-(tok_size + 1) // 64) * 64 if fx["code"] == "chatglm3" else tok_size
    real_cfg = fx.get("base_config") or json.loads((hub_dir / "config.json").read_text())
    real_vocab = real_cfg.get("padded_vocab_size", real_cfg.get("vocab_size"))
    if fx["tokenizer"] == "internlm2":
        real_vocab = 92544
    write_tokenizer_files(fx, out, sp_bytes, shared_rc, real_vocab, tok_size)

    # -- config + model built by the hub code ---------------------------------------------------------------
    cfg_dict = shrink_config(fx, hub_dir, vocab)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[cfg_dict["torch_dtype"]]
    build = code_dir_with(None, hub_dir, f"build_{name}")
    _write_json(build / "config.json", cfg_dict)
    with stub_packages(stubs_for(fx["code"])):
        config = AutoConfig.from_pretrained(str(build), trust_remote_code=True)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True, torch_dtype=torch.float32)
    fill_parameters(model, seed)
    model = model.to(dtype).eval()
    save_dir = _TMP_ROOT / f"save_{name}"
    save_weights(model, save_dir, fx["storage"])
    saved = sorted(p.name for p in save_dir.iterdir())
    for f in saved:
        if f.endswith((".safetensors", ".bin", ".index.json")):
            shutil.copy2(save_dir / f, out / f)
    # config.json: the real hub file's keys and order, sizes shrunk (not save_pretrained's re-serialisation,
    # which would e.g. rename chatglm3's architectures and drop baichuan2-13b's gradient_checkpointing).
    _write_json(out / "config.json", cfg_dict)
    gen_src = fx.get("generation_config", fx["code"])
    if (shared_rc / gen_src / "generation_config.json").exists():
        shutil.copy2(shared_rc / gen_src / "generation_config.json", out / "generation_config.json")
    elif fx["code"] != "chatglm3" and (save_dir / "generation_config.json").exists():
        shutil.copy2(save_dir / "generation_config.json", out / "generation_config.json")
    del model

    # -- golden outputs from the SAVED folder, reloaded through the hub code -
    g = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)
    model = load_model(out, hub_dir, f"load_{name}", fx["code"])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits.float().contiguous()
    assert logits.shape == (BATCH, SEQ, vocab), logits.shape
    del model

    tensors = {"input_ids": input_ids, "logits": logits}
    gen_info: dict = {
        "prompt": "input_ids[0:1, :10]",
        "max_new_tokens": NEW_TOKENS,
        "greedy": True,
        "use_cache": True,
        "stored_as": "generated = the 8 new token ids, shape [1, 8]",
        "generation_config": "do_sample=False, no eos stop, no repetition penalty",
    }
    try:
        gc = GenerationConfig(
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=None,
            use_cache=True,
            eos_token_id=None,
            pad_token_id=0,
            bos_token_id=1,
            num_beams=1,
            repetition_penalty=1.0,
            temperature=1.0,
            top_k=None,
            top_p=None,
        )
        prompt = input_ids[:1, :PROMPT]
        model = load_model(out, hub_dir, f"gen_{name}", fx["code"])
        with torch.no_grad():
            seq = model.generate(prompt, generation_config=gc)
        del model
        new = seq[:, PROMPT:].contiguous()
        assert new.shape == (1, NEW_TOKENS), new.shape
        tensors["generated"] = new.to(torch.int64)
        # the same greedy continuation without the KV cache (full recompute), fresh load, for information
        model = load_model(out, hub_dir, f"nocache_{name}", fx["code"])
        ids = prompt
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                nxt = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, nxt], dim=1)
        del model
        gen_info["matches_no_cache_recompute"] = bool(torch.equal(ids[:, PROMPT:], new))
        gen_info["available"] = True
    except Exception as e:  # noqa: BLE001 - recorded in reference.json
        gen_info = {"available": False, "error": f"{type(e).__name__}: {e}"}
    save_file(tensors, str(out / "reference.safetensors"))

    # -- tokenizer golden (hub tokenizer code + the files just written) -
    tok_code = hub_dir if fx["tokenizer"] != "baichuan" else shared_rc / "baichuan2_7b"
    tok_dir = code_dir_with(out, tok_code, f"tok_{name}")
    tok, tok_workaround = load_hub_tokenizer(tok_dir)
    assert tok.vocab_size == tok_size, (tok.vocab_size, tok_size)

    ref = {
        "fixture": name,
        "hub_id": fx["hub_id"],
        "hub_code": f"reference/remote_code/{fx['code']}",
        "alibi_13b_code": bool(fx.get("alibi")),
        "xtune_expectation": "refuse (ALiBi, no native architecture)" if fx.get("alibi") else "load natively",
        "versions": versions(),
        "provenance": provenance(hub_dir),
        "tokenizer_provenance": provenance(tok_code) if tok_code != hub_dir else "same as provenance",
        "tokenizer_code": (
            f"reference/remote_code/{'baichuan2_7b' if fx['tokenizer'] == 'baichuan' else fx['code']}"
            f"/{json.loads((out / 'tokenizer_config.json').read_text())['auto_map']['AutoTokenizer'][0]}"
        ),
        "dtype": cfg_dict["torch_dtype"],
        "storage": fx["storage"],
        "files": sorted(p.name for p in out.iterdir() if p.name != "reference.json"),
        "save_pretrained_wrote": saved,
        "vocab_size": vocab,
        "tokenizer_size": tok_size,
        "tokenizer_vocab_size_property": tok.vocab_size,
        "len_tokenizer": len(tok),
        "sp_pieces": n_pieces,
        "seed": seed,
        "inputs": {"input_ids": f"uniform random in [0, {vocab}), shape [{BATCH}, {SEQ}], seed {seed + 1}"},
        "logits": {
            "shape": list(logits.shape),
            "dtype": "float32",
            "computed_as": "from_pretrained(saved folder, "
            "trust_remote_code, torch_dtype=float32).eval()(input_ids).logits",
            "max_abs": float(logits.abs().max()),
            "mean_abs": float(logits.abs().mean()),
            "std": float(logits.std()),
        },
        "generated": gen_info,
        "notes": fx.get("notes", []) + ([tok_workaround] if tok_workaround else []),
        "tokenizer": tokenizer_golden(tok),
    }
    _write_json(out / "reference.json", ref)
    return ref


def versions() -> dict:
    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "sentencepiece": spm.__version__,
        "python": sys.version.split()[0],
    }


def v7_sft_golden(shared: Path, out_root: Path) -> None:
    hub_dir = shared / "reference" / "remote_code" / "internlm"
    model_file = shared / "reference" / "tokenizers" / "internlm1_sentencepiece" / "V7_sft.model"
    d = code_dir_with(None, hub_dir, "tok_v7_sft")
    shutil.copy2(model_file, d / "tokenizer.model")
    for f in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(hub_dir / f, d / f)
    tok, _ = load_hub_tokenizer(d)
    out = out_root / "tokenizer_golden"
    out.mkdir(parents=True, exist_ok=True)
    _write_json(
        out / "internlm_v7_sft.json",
        {
            "tokenizer_model": "reference/tokenizers/internlm1_sentencepiece/V7_sft.model (not copied here)",
            "tokenizer_model_sha256": sha256(model_file),
            "tokenizer_code": "reference/remote_code/internlm/tokenization_internlm.py "
            "(InternLMTokenizer), with "
            "reference/remote_code/internlm/tokenizer_config.json + special_tokens_map.json",
            "provenance": provenance(hub_dir),
            "versions": versions(),
            "vocab_size": tok.vocab_size,
            "len_tokenizer": len(tok),
            "tokenizer": tokenizer_golden(tok),
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--shared", type=Path, required=True, help="the shared/ folder (holds reference/remote_code)"
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder, e.g. tests/assets/legacy")
    ap.add_argument("--only", nargs="*", default=None, help="subset of fixtures (default: all)")
    args = ap.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        tok_models = {k: train_tokenizer(k) for k in TOKENIZERS}
        names = args.only or list(FIXTURES)
        for i, name in enumerate(FIXTURES):
            if name not in names:
                continue
            ref = make_fixture(name, FIXTURES[name], args.shared, args.out, tok_models, SEED + 100 * i)
            gen = ref["generated"]
            print(
                f"{name:14s} vocab={ref['vocab_size']:5d} dtype={ref['dtype']:9s} "
                f"storage={ref['storage']:20s} "
                f"max|logit|={ref['logits']['max_abs']:.4f} generated={gen.get('available')}"
                + ("" if gen.get("available") else f" ({gen.get('error')})")
            )
        if args.only is None or "tokenizer_golden" in names:
            v7_sft_golden(args.shared, args.out)
            print("tokenizer_golden/internlm_v7_sft.json")
        if _TOKENIZER_PATCHES:
            print("tokenizer init-order workaround applied to:", *sorted(set(_TOKENIZER_PATCHES)), sep="\n  ")
    finally:
        shutil.rmtree(_TMP_ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
