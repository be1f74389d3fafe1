"""Built-in checkpoint conversions: the legacy hub-code families as native transformers architectures.

Each entry was checked on tiny checkpoints in the original layout against the family's own hub code run
under transformers 4.x (tests/assets/legacy, tests/test_legacy_models.py): logits agree to 1e-5 in fp32.
What each rule does and why:

- InternLM2 / 2.5 -> Llama. `wqkv` holds, for each key-value head, its group of query heads, then its key,
  then its value; it is cut per group (`grouped_qkv`). `w1 / w3 / w2` are gate / up / down.
- InternLM (v1) -> Llama with biases on q, k, v and o (7B; the 20B has none): the names already match.
- Baichuan-7B and Baichuan2-7B -> Llama: `W_pack` is q, k, v stacked in thirds. Baichuan2's NormHead
  scales each output row to unit length; doing it once at load is exact for inference (a full fine-tune
  that trains `lm_head` freely is no longer NormHead: it stays frozen, see the baichuan2 family).
- ChatGLM2 / 3 (and GLM-4's hub layout) -> Glm, the architecture of GLM-4's converted checkpoints:
  `query_key_value` is all query heads, then the key groups, then the value groups; `dense_h_to_4h` is
  already Glm's fused gate|up projection.
- Baichuan 13B (v1 and v2) use ALiBi, ChatGLM-6B v1 and VisualGLM GLM-130B's 2D positions with a prefix-LM
  mask: no transformers architecture implements either, so they are refused with the reason.
"""

from xtune.hookspecs import hookimpl
from xtune.registry import CheckpointConversion

OPS = "xtune.models.legacy_ops"
CONFIGS = "xtune.models.legacy_configs"
QKV = ("self_attn.q_proj.{}", "self_attn.k_proj.{}", "self_attn.v_proj.{}")


def _qkv(source: str, part: str, op: str) -> tuple:
    return (source.format(part), tuple(t.format(part) for t in QKV), f"{OPS}:{op}")


INTERNLM2 = (
    (r"tok_embeddings", "embed_tokens"),
    (r"attention\.wo", "self_attn.o_proj"),
    (r"feed_forward\.w1", "mlp.gate_proj"),
    (r"feed_forward\.w3", "mlp.up_proj"),
    (r"feed_forward\.w2", "mlp.down_proj"),
    (r"attention_norm", "input_layernorm"),
    (r"ffn_norm", "post_attention_layernorm"),
    (r"^output\.", "lm_head."),
    _qkv(r"attention\.wqkv\.{}", "weight", "grouped_qkv"),
    _qkv(r"attention\.wqkv\.{}", "bias", "grouped_qkv"),
)
BAICHUAN = (_qkv(r"self_attn\.W_pack\.{}", "weight", "thirds"),)
CHATGLM = (
    (r"transformer\.embedding\.word_embeddings", "model.embed_tokens"),
    (r"transformer\.encoder\.layers", "model.layers"),
    (r"transformer\.encoder\.final_layernorm", "model.norm"),
    (r"transformer\.output_layer", "lm_head"),
    (r"self_attention\.dense", "self_attn.o_proj"),
    (r"mlp\.dense_h_to_4h", "mlp.gate_up_proj"),
    (r"mlp\.dense_4h_to_h", "mlp.down_proj"),
    _qkv(r"self_attention\.query_key_value\.{}", "weight", "qkv_sizes"),
    _qkv(r"self_attention\.query_key_value\.{}", "bias", "qkv_sizes"),
)
SPM = "xtune.models.legacy_tokenizers"

CONVERSIONS = (
    CheckpointConversion(
        name="internlm2_llama", description="InternLM2 / InternLM2.5 as Llama (wqkv cut per key-value group)",
        model_type="internlm2", architectures=("InternLM2ForCausalLM",), target="llama",
        config=f"{CONFIGS}:internlm2_llama", weights=INTERNLM2,
        tokenizer_classes=("InternLM2Tokenizer", "InternLM2TokenizerFast"), tokenizer=f"{SPM}:sentencepiece"),
    CheckpointConversion(
        name="internlm_llama", description="InternLM (v1) as Llama with attention biases",
        model_type="internlm", architectures=("InternLMForCausalLM",), target="llama",
        config=f"{CONFIGS}:internlm_llama", tokenizer_classes=("InternLMTokenizer",),
        tokenizer=f"{SPM}:sentencepiece"),
    CheckpointConversion(
        name="baichuan_llama", description="Baichuan-7B (v1) as Llama (W_pack in thirds)",
        model_type="baichuan", architectures=("BaiChuanForCausalLM",), target="llama",
        config=f"{CONFIGS}:baichuan_llama", weights=BAICHUAN,
        tokenizer_classes=("BaiChuanTokenizer",), tokenizer=f"{SPM}:sentencepiece"),
    CheckpointConversion(
        name="baichuan2_llama", description="Baichuan2-7B as Llama (W_pack in thirds, NormHead applied once)",
        model_type="baichuan", architectures=("BaichuanForCausalLM",), target="llama",
        config=f"{CONFIGS}:baichuan_llama",
        weights=(*BAICHUAN, (r"^lm_head\.weight", ("lm_head.weight",), f"{OPS}:normalize_rows")),
        tokenizer_classes=("BaichuanTokenizer",), tokenizer=f"{SPM}:sentencepiece"),
    CheckpointConversion(
        name="baichuan_13b_alibi", description="Baichuan-13B / Baichuan2-13B (ALiBi): refused",
        model_type="baichuan", absent=("max_position_embeddings",),
        refuse="Baichuan's 13B models add ALiBi attention biases instead of rotary positions (their config "
               "has no max_position_embeddings), and no transformers architecture with RMSNorm and a gated "
               "MLP implements ALiBi"),
    CheckpointConversion(
        name="chatglm_glm", description="ChatGLM2 / ChatGLM3 (and GLM-4's hub layout) as Glm",
        model_type="chatglm", requires=("padded_vocab_size",), target="glm",
        config=f"{CONFIGS}:chatglm_glm", weights=CHATGLM,
        tokenizer_classes=("ChatGLMTokenizer",), tokenizer=f"{SPM}:chatglm"),
    CheckpointConversion(
        name="chatglm_v1", description="ChatGLM-6B (v1) and VisualGLM-6B: refused",
        model_type="chatglm", requires=("position_encoding_2d",),
        refuse="ChatGLM-6B (v1) and VisualGLM-6B use GLM-130B's 2D rotary positions with a bidirectional "
               "prompt (prefix-LM mask), which no transformers architecture implements"),
)


@hookimpl
def register_checkpoint_conversions(register):
    for entry in CONVERSIONS:
        register(entry)
