"""One tiny, random, architecture-exact model per model family of xtune's registry: the data of
tests/test_family_matrix.py.

Each `TinyFamily` is the hub `config.json` of one real checkpoint of the family, written from that file
and shrunk: hidden size <= 64, 2 layers, a vocabulary of the tiny tokenizer's size, a few experts. Every
key that decides *which computation runs* is kept as the hub file has it: model_type and architectures,
the query : key/value head ratio (MHA, GQA or MQA), an explicit head_dim where the real one is not
hidden / heads, the RoPE base and scaling (llama3, linear, longrope, yarn), norm epsilons, activations,
q/k norms, logit soft-capping, sliding windows, mixtures of experts and multi-head latent attention, and
whether the output projection is tied to the embedding. Sizes are scaled down keeping their ratios where
that is possible; each entry's comment says what it mirrors and what it keeps. Weights are fp32 (the hub
files say bf16 / fp16; CPU runs fp32 anyway).

Token-id fields (`bos_token_id`, `eos_token_id`, `pad_token_id`) are written as token *strings* and
resolved against the tiny tokenizer when the model is built, so they name the same token as the hub
file does (DeepSeek's 100000 is `<｜begin▁of▁sentence｜>`: here, that token's id in the tiny vocabulary).

`tokens` are the tokenizer_config's bos / eos / unk / pad; `specials` the added special tokens the
family's chat template emits (so a rendered prompt tokenizes to the same turn markers as the real
tokenizer, one id each); `added` the added tokens that are not "special" (Qwen3's <think>).

The families whose hub checkpoints need their own modelling code (InternLM 1 / 2 / 2.5, ChatGLM3, Baichuan,
Baichuan2) are in `LEGACY`: their tiny checkpoints come from tests/assets/legacy/<folder>/ in the hub's own
layout (tools/make_legacy_fixtures.py), and each row runs as soon as its folder is there.
Vision-language families are in `VLM` (trained, merged and chatted with in tests/test_vlm_train.py),
image encoders in `VISION_COMPONENTS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TinyFamily:
    """One row of the matrix: a registry family (or one architecture of it) on its tiny model."""

    id: str  # the test id: the family name, or family-architecture where a family has several
    family: str  # the registry family (models.json)
    recipe: str  # the generated recipe it runs (LoRA on alpaca)
    hub_id: str  # the checkpoint whose config.json `config` shrinks
    config: dict
    tokens: dict  # bos_token / eos_token / unk_token / pad_token of its tokenizer_config.json
    specials: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    chat_template: bool = True  # the hub tokenizer ships a chat_template (chat / instruct checkpoints)
    options: tuple[str, ...] = ()  # extra --cfg-options (families that have no recipe of their own)
    # A step xtune refuses, by design or by a gap this matrix found: {step: text the Error line must hold}.
    # The matrix asserts the refusal and the table reports it, so a fix shows up as a failing test.
    refused: dict = field(default_factory=dict)
    # --cfg-options with which a refused `train` does run: the later steps are then proven on that run.
    workaround: tuple[str, ...] = ()
    note: str = ""


def _ids(bos=None, eos=None, pad=None) -> dict:
    return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}


LLAMA_SPECIALS = ("<s>", "</s>", "<unk>")  # SentencePiece control tokens of Llama-2 / Mistral vocabularies
LLAMA_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
L3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
               "<|eot_id|>")
L31_SPECIALS = L3_SPECIALS + ("<|finetune_right_pad_id|>", "<|eom_id|>", "<|python_tag|>")
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
DS_BOS, DS_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
PHI3_TOKENS = dict(LLAMA_TOKENS, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
PHI3_SPECIALS = LLAMA_SPECIALS + ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>")
MOE_DROPOUT = ("peft adapts transformers 5's fused experts through ParamWrapper, which has no dropout: "
               "the generated MoE recipes set lora_dropout=0.0")
L31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}

FAMILIES: list[TinyFamily] = [
    # meta-llama/Llama-2-7b-chat-hf: MHA (32 q = 32 kv heads), RoPE theta 1e4 without scaling, SiLU,
    # RMSNorm 1e-5, untied output; 11008/4096 MLP ratio.
    TinyFamily(
        "llama2", "llama2", "llama2_7b_chat_lora_alpaca_e3", "meta-llama/Llama-2-7b-chat-hf",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=172, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
             attention_bias=False, mlp_bias=False, pretraining_tp=1, tie_word_embeddings=False,
             **_ids("<s>", "</s>")),
        LLAMA_TOKENS, LLAMA_SPECIALS),
    # meta-llama/Meta-Llama-3-8B-Instruct: GQA 32:8 (4:1), RoPE theta 5e5 without scaling, untied,
    # tiktoken-style byte-level BPE with the header / eot special tokens.
    TinyFamily(
        "llama3", "llama3", "llama3_8b_instruct_lora_alpaca_e3", "meta-llama/Meta-Llama-3-8B-Instruct",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=224, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2,
             max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=None,
             attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
             **_ids("<|begin_of_text|>", "<|eot_id|>")),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, L3_SPECIALS),
    # meta-llama/Llama-3.1-8B-Instruct: Llama-3 plus llama3 RoPE scaling (factor 8, low 1, high 4, from
    # 8192 to 131072 positions) and three EOS ids.
    TinyFamily(
        "llama3_1", "llama3_1", "llama3_1_8b_instruct_lora_alpaca_e3", "meta-llama/Llama-3.1-8B-Instruct",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=224, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2,
             max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
             rope_scaling=dict(L31_ROPE), attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
             **_ids("<|begin_of_text|>", ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"])),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, L31_SPECIALS),
    # meta-llama/Llama-3.2-1B-Instruct: GQA 32:8, explicit head_dim, llama3 RoPE with factor 32, and a
    # TIED output projection (the 1B / 3B models tie, the 8B ones do not).
    TinyFamily(
        "llama3_2", "llama3_2", "llama3_2_1b_instruct_lora_alpaca_e3", "meta-llama/Llama-3.2-1B-Instruct",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=256, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
             num_hidden_layers=2, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
             rope_scaling=dict(L31_ROPE, factor=32.0), attention_bias=False, mlp_bias=False,
             tie_word_embeddings=True,
             **_ids("<|begin_of_text|>", ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"])),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, L31_SPECIALS),
    # meta-llama/Llama-3.3-70B-Instruct: GQA 64:8 (8:1), llama3 RoPE factor 8, untied. The registry has
    # the family and its template but no checkpoint row, so no recipe of its own: it runs Llama-3.1-70B's
    # recipe with model_adapter / prompt_template switched to llama3_3.
    TinyFamily(
        "llama3_3", "llama3_3", "llama3_3_70b_instruct_lora_alpaca_e3", "meta-llama/Llama-3.3-70B-Instruct",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=224, num_attention_heads=8, num_key_value_heads=1, num_hidden_layers=2,
             max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
             rope_scaling=dict(L31_ROPE), attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
             **_ids("<|begin_of_text|>", ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"])),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, L31_SPECIALS),
    # Qwen/Qwen1.5-0.5B-Chat: Qwen2 architecture, MHA 16:16, q/k/v biases, RoPE theta 1e6, RMSNorm 1e-6,
    # sliding window declared but off (use_sliding_window false), untied output (0.62B parameters).
    TinyFamily(
        "qwen1_5", "qwen1_5", "qwen1_5_0_5b_chat_lora_alpaca_e3", "Qwen/Qwen1.5-0.5B-Chat",
        dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", hidden_size=64,
             intermediate_size=176, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=32768, max_window_layers=21, rms_norm_eps=1e-6, rope_theta=1000000.0,
             sliding_window=32768, use_sliding_window=False, tie_word_embeddings=False,
             **_ids("<|endoftext|>", "<|im_end|>")),
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None}, CHATML_SPECIALS),
    # Qwen/Qwen2-0.5B-Instruct: GQA 14:2 (7:1) with 64-wide heads, q/k/v biases, tied output.
    TinyFamily(
        "qwen2", "qwen2", "qwen2_0_5b_instruct_lora_alpaca_e3", "Qwen/Qwen2-0.5B-Instruct",
        dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", hidden_size=56,
             intermediate_size=304, num_attention_heads=7, num_key_value_heads=1, num_hidden_layers=2,
             max_position_embeddings=32768, max_window_layers=24, rms_norm_eps=1e-6, rope_theta=1000000.0,
             sliding_window=32768, use_sliding_window=False, tie_word_embeddings=True,
             **_ids("<|endoftext|>", "<|im_end|>")),
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None}, CHATML_SPECIALS),
    # Qwen/Qwen2.5-0.5B-Instruct: as Qwen2-0.5B (GQA 7:1, q/k/v biases, tied), RoPE theta 1e6.
    TinyFamily(
        "qwen2_5", "qwen2_5", "qwen2_5_0_5b_instruct_lora_alpaca_e3", "Qwen/Qwen2.5-0.5B-Instruct",
        dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu", hidden_size=56,
             intermediate_size=304, num_attention_heads=7, num_key_value_heads=1, num_hidden_layers=2,
             max_position_embeddings=32768, max_window_layers=21, rms_norm_eps=1e-6, rope_theta=1000000.0,
             sliding_window=32768, use_sliding_window=False, tie_word_embeddings=True,
             **_ids("<|endoftext|>", "<|im_end|>")),
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None},
        CHATML_SPECIALS),
    # Qwen/Qwen3-0.6B: GQA 16:8, head_dim 128 = twice hidden / heads, RMS q/k norms, no biases, tied,
    # <think> / </think> as added (non-special) tokens.
    TinyFamily(
        "qwen3", "qwen3", "qwen3_0_6b_lora_alpaca_e3", "Qwen/Qwen3-0.6B",
        dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_act="silu", hidden_size=32,
             intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             num_hidden_layers=2, max_position_embeddings=40960, max_window_layers=28, rms_norm_eps=1e-6,
             rope_theta=1000000.0, rope_scaling=None, attention_bias=False, sliding_window=None,
             use_sliding_window=False, tie_word_embeddings=True, **_ids("<|endoftext|>", "<|im_end|>")),
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None}, CHATML_SPECIALS,
        added=("<think>", "</think>")),
    # mistralai/Mistral-7B-Instruct-v0.2: GQA 32:8, RoPE theta 1e6, no sliding window (v0.1 had 4096),
    # untied; [INST] is plain text in its SentencePiece vocabulary.
    TinyFamily(
        "mistral", "mistral", "mistral_7b_instruct_v0_2_lora_alpaca_e3", "mistralai/Mistral-7B-Instruct-v0.2",
        dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_act="silu", hidden_size=64,
             intermediate_size=224, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2,
             max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None,
             tie_word_embeddings=False, **_ids("<s>", "</s>")),
        LLAMA_TOKENS, LLAMA_SPECIALS),
    # mistralai/Mistral-Nemo-Instruct-2407: GQA 32:8 with head_dim 128 while hidden / heads is 160
    # (q_proj narrower than the hidden size: 48 < 64 here as 4096 < 5120), RoPE theta 1e6, 1M positions;
    # its Tekken vocabulary has [INST] / [/INST] as control tokens.
    TinyFamily(
        "mistral_nemo", "mistral_nemo", "mistral_nemo_12b_instruct_lora_alpaca_e3",
        "mistralai/Mistral-Nemo-Instruct-2407",
        dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_act="silu", hidden_size=64,
             intermediate_size=180, num_attention_heads=8, num_key_value_heads=2, head_dim=6,
             num_hidden_layers=2, max_position_embeddings=1024000, rms_norm_eps=1e-5, rope_theta=1000000.0,
             sliding_window=None, tie_word_embeddings=False, **_ids("<s>", "</s>")),
        LLAMA_TOKENS, LLAMA_SPECIALS + ("[INST]", "[/INST]")),
    # mistralai/Mixtral-8x7B-Instruct-v0.1: sparse MoE, top-2 routing (8 experts -> 4 here), router aux
    # loss 0.02, GQA 32:8, RoPE theta 1e6, untied.
    TinyFamily(
        "mixtral", "mixtral", "mixtral_8x7b_instruct_lora_alpaca_e3", "mistralai/Mixtral-8x7B-Instruct-v0.1",
        dict(architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_act="silu", hidden_size=64,
             intermediate_size=96, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2,
             num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.02,
             output_router_logits=False, max_position_embeddings=32768, rms_norm_eps=1e-5,
             rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False, **_ids("<s>", "</s>")),
        LLAMA_TOKENS, LLAMA_SPECIALS,
        note=MOE_DROPOUT),
    # google/gemma-2b: MQA (8 q heads, 1 kv head), head_dim given explicitly (256), GeGLU with the tanh
    # GELU, (1 + w) RMSNorm, embeddings scaled by sqrt(hidden), tied output, 8x MLP.
    TinyFamily(
        "gemma", "gemma", "gemma_2b_lora_alpaca_e3", "google/gemma-2b",
        dict(architectures=["GemmaForCausalLM"], model_type="gemma", hidden_act="gelu",
             hidden_activation="gelu_pytorch_tanh", hidden_size=64, intermediate_size=512,
             num_attention_heads=8, num_key_value_heads=1, head_dim=8, num_hidden_layers=2,
             max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0, attention_bias=False,
             tie_word_embeddings=True, **_ids("<bos>", "<eos>", "<pad>")),
        {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"), chat_template=False),
    # google/gemma-2-2b-it: Gemma 2: GQA 8:4, head_dim 256 below hidden / heads (288),
    # query_pre_attn_scalar = head_dim, attention logits soft-capped at 50 and final logits at 30,
    # alternating sliding-window (4096 of 8192 positions; 32 of a 64-token row here) and global layers,
    # pre- and post-norms, tied output.
    TinyFamily(
        "gemma2", "gemma", "gemma2_2b_it_lora_alpaca_e3", "google/gemma-2-2b-it",
        dict(architectures=["Gemma2ForCausalLM"], model_type="gemma2", hidden_act="gelu_pytorch_tanh",
             hidden_activation="gelu_pytorch_tanh", hidden_size=64, intermediate_size=256,
             num_attention_heads=4, num_key_value_heads=2, head_dim=14, query_pre_attn_scalar=14,
             num_hidden_layers=2, max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0,
             attention_bias=False, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
             sliding_window=32, cache_implementation="hybrid", tie_word_embeddings=True,
             **_ids("<bos>", ["<eos>", "<end_of_turn>"], "<pad>")),
        {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        note="soft-capped attention has no sdpa path in transformers 5: 'auto' leaves the choice to "
             "transformers, which picks eager"),
    # microsoft/Phi-3-mini-4k-instruct: fused qkv_proj and gate_up_proj, MHA 32:32, sliding window 2047 of
    # 4096 positions (31 of 64 here), no RoPE scaling, untied; <|user|> / <|end|> are special tokens.
    TinyFamily(
        "phi3", "phi3", "phi3_mini_4k_instruct_lora_alpaca_e3", "microsoft/Phi-3-mini-4k-instruct",
        dict(architectures=["Phi3ForCausalLM"], model_type="phi3", hidden_act="silu", hidden_size=64,
             intermediate_size=172, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=4096, original_max_position_embeddings=4096, rms_norm_eps=1e-5,
             rope_theta=10000.0, rope_scaling=None, sliding_window=31, attention_bias=False,
             attention_dropout=0.0, embd_pdrop=0.0, resid_pdrop=0.0, tie_word_embeddings=False,
             **_ids("<s>", "<|endoftext|>", "<|endoftext|>")),
        PHI3_TOKENS,
        PHI3_SPECIALS),
    # microsoft/Phi-3-mini-128k-instruct: Phi-3-mini with LongRoPE (per-frequency short / long factors,
    # head_dim / 2 of each, from 4096 to 131072 positions). xtune's GGUF writer has no LongRoPE.
    TinyFamily(
        "phi3-128k", "phi3", "phi3_mini_128k_instruct_lora_alpaca_e3",
        "microsoft/Phi-3-mini-128k-instruct",
        dict(architectures=["Phi3ForCausalLM"], model_type="phi3", hidden_act="silu", hidden_size=64,
             intermediate_size=172, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=131072, original_max_position_embeddings=4096, rms_norm_eps=1e-5,
             rope_theta=10000.0,
             rope_scaling={"type": "longrope",
                           "short_factor": [1.0, 1.01, 1.02, 1.05, 1.1, 1.2, 1.4, 1.7],
                           "long_factor": [1.0, 1.3, 1.9, 3.2, 6.5, 13.0, 26.0, 41.0]},
             sliding_window=262144, attention_bias=False, attention_dropout=0.0, embd_pdrop=0.0,
             resid_pdrop=0.0, tie_word_embeddings=False, **_ids("<s>", "<|endoftext|>", "<|endoftext|>")),
        PHI3_TOKENS,
        PHI3_SPECIALS,
        refused={"gguf": "RoPE scaling 'longrope' cannot be written as GGUF"}),
    # deepseek-ai/deepseek-llm-7b-chat: a plain Llama layout (MHA 32:32, RoPE theta 1e4, RMSNorm 1e-6,
    # untied) with DeepSeek's byte-level vocabulary and fullwidth-bar special tokens.
    TinyFamily(
        "deepseek", "deepseek", "deepseek_llm_7b_chat_lora_alpaca_e3", "deepseek-ai/deepseek-llm-7b-chat",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=172, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
             attention_bias=False, tie_word_embeddings=False, **_ids(DS_BOS, DS_EOS)),
        {"bos_token": DS_BOS, "eos_token": DS_EOS}, (DS_BOS, DS_EOS)),
    # deepseek-ai/deepseek-moe-16b-chat: model_type "deepseek" (DeepseekForCausalLM), which exists only as
    # the hub's modeling_deepseek.py (auto_map): 64 routed experts (4 here) of 1408, 2 shared, top-6
    # (top-2 here), first layer dense. transformers 5 has no such class, and the generated recipe says
    # trust_remote_code=False: xtune cannot load it (no weights are written: the config is refused).
    TinyFamily(
        "deepseek-moe", "deepseek", "deepseek_moe_16b_chat_lora_alpaca_e3",
        "deepseek-ai/deepseek-moe-16b-chat",
        dict(architectures=["DeepseekForCausalLM"], model_type="deepseek",
             auto_map={"AutoConfig": "configuration_deepseek.DeepseekConfig",
                       "AutoModel": "modeling_deepseek.DeepseekModel",
                       "AutoModelForCausalLM": "modeling_deepseek.DeepseekForCausalLM"},
             hidden_act="silu", hidden_size=64, intermediate_size=172, moe_intermediate_size=16,
             n_routed_experts=4, n_shared_experts=2, num_experts_per_tok=2, first_k_dense_replace=1,
             moe_layer_freq=1, norm_topk_prob=False, scoring_func="softmax", aux_loss_alpha=0.001,
             seq_aux=True, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
             attention_bias=False, tie_word_embeddings=False, **_ids(DS_BOS, DS_EOS)),
        {"bos_token": DS_BOS, "eos_token": DS_EOS}, (DS_BOS, DS_EOS),
        refused={"train": "deepseek"},
        note="model_type 'deepseek' exists only as the hub's modeling_deepseek.py: transformers 5.23 has "
             "no such class and xtune no native twin for it; its recipes are listed as unsupported by "
             "list-cfg"),
    # deepseek-ai/DeepSeek-V2-Lite-Chat: multi-head latent attention (no q compression, kv_lora_rank 512,
    # decoupled RoPE dims 64 + nope 128, v 128: 16 / 4 / 8 / 8 here), DeepSeekMoE (64 routed experts -> 4,
    # 2 shared, top-6 -> top-2, greedy softmax routing, first layer dense), YaRN RoPE (factor 40,
    # mscale 0.707), untied; the hub file keeps its auto_map to the hub code.
    TinyFamily(
        "deepseek-v2", "deepseek", "deepseek_v2_lite_chat_lora_alpaca_e3",
        "deepseek-ai/DeepSeek-V2-Lite-Chat",
        dict(architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2",
             auto_map={"AutoConfig": "configuration_deepseek.DeepseekV2Config",
                       "AutoModel": "modeling_deepseek.DeepseekV2Model",
                       "AutoModelForCausalLM": "modeling_deepseek.DeepseekV2ForCausalLM"},
             hidden_act="silu", hidden_size=64, intermediate_size=128, moe_intermediate_size=16,
             n_routed_experts=4, n_shared_experts=2, num_experts_per_tok=2, first_k_dense_replace=1,
             moe_layer_freq=1, topk_method="greedy", n_group=1, topk_group=1, routed_scaling_factor=1.0,
             norm_topk_prob=False, scoring_func="softmax", aux_loss_alpha=0.001, seq_aux=True, ep_size=1,
             num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=16,
             qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, num_hidden_layers=2,
             max_position_embeddings=163840, rms_norm_eps=1e-6, rope_theta=10000.0,
             rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                           "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
             attention_bias=False, tie_word_embeddings=False, **_ids(DS_BOS, DS_EOS)),
        {"bos_token": DS_BOS, "eos_token": DS_EOS}, (DS_BOS, DS_EOS),
        note=MOE_DROPOUT),
    # deepseek-ai/DeepSeek-V3: MLA with q compression (q_lora_rank 1536 -> 24), 256 routed experts -> 4,
    # 1 shared, sigmoid scores with a correction bias (noaux_tc), grouped routing (8 groups, 4 chosen -> 2,
    # 1), top-8 -> top-2 scaled by 2.5, normalised, first 3 layers dense (1 here), YaRN (factor 40, mscale
    # 1), untied. Its fp8 quantization_config and multi-token-prediction layer are left out (random fp32
    # weights; transformers does not build the MTP layer). No checkpoint row, so no recipe of its own: it
    # runs DeepSeek-V2-Lite's recipe with model_adapter / prompt_template switched to deepseek_v3.
    TinyFamily(
        "deepseek_v3", "deepseek_v3", "deepseek_v2_lite_chat_lora_alpaca_e3", "deepseek-ai/DeepSeek-V3",
        dict(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", hidden_act="silu",
             hidden_size=64, intermediate_size=128, moe_intermediate_size=16, n_routed_experts=4,
             n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, moe_layer_freq=1,
             topk_method="noaux_tc", n_group=2, topk_group=1, routed_scaling_factor=2.5, norm_topk_prob=True,
             scoring_func="sigmoid", ep_size=1, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24,
             kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, num_hidden_layers=2,
             max_position_embeddings=163840, rms_norm_eps=1e-6, rope_theta=10000.0,
             rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                           "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
             attention_bias=False, tie_word_embeddings=False, **_ids(DS_BOS, DS_EOS)),
        {"bos_token": DS_BOS, "eos_token": DS_EOS, "pad_token": DS_EOS}, (DS_BOS, DS_EOS),
        added=("<｜User｜>", "<｜Assistant｜>"),
        options=("model_adapter=deepseek_v3", "prompt_template=deepseek_v3"),
        note="no recipe of its own (models.json has no deepseek_v3 checkpoint): DeepSeek-V2-Lite's recipe; "
             + MOE_DROPOUT),
    # deepseek-ai/deepseek-coder-1.3b-instruct: Llama layout, MHA 16:16, linear RoPE scaling (factor 4,
    # theta 1e5, 16384 positions), untied; EOS is <|EOT|>.
    TinyFamily(
        "deepseek_coder", "deepseek_coder", "deepseek_coder_1_3b_instruct_lora_alpaca_e3",
        "deepseek-ai/deepseek-coder-1.3b-instruct",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=172, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=16384, rms_norm_eps=1e-6, rope_theta=100000.0,
             rope_scaling={"type": "linear", "factor": 4.0}, attention_bias=False, tie_word_embeddings=False,
             **_ids(DS_BOS, "<|EOT|>")),
        {"bos_token": DS_BOS, "eos_token": "<|EOT|>", "pad_token": DS_EOS}, (DS_BOS, DS_EOS, "<|EOT|>")),
    # 01-ai/Yi-1.5-6B-Chat: Llama layout, GQA 32:4 (8:1), RoPE theta 5e6, RMSNorm 1e-6, untied;
    # <|startoftext|> BOS and ChatML markers as special tokens.
    TinyFamily(
        "yi", "yi", "yi_1_5_6b_chat_lora_alpaca_e3", "01-ai/Yi-1.5-6B-Chat",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=172, num_attention_heads=8, num_key_value_heads=1, num_hidden_layers=2,
             max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=5000000.0, rope_scaling=None,
             attention_bias=False, tie_word_embeddings=False, **_ids("<|startoftext|>", "<|endoftext|>")),
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk>",
         "pad_token": "<unk>"},
        ("<unk>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>")),
    # HuggingFaceH4/zephyr-7b-beta: Mistral-7B-v0.1's layout (GQA 32:8, RoPE theta 1e4, sliding window
    # 4096), untied; <|user|> / <|assistant|> are plain text of the Mistral vocabulary.
    TinyFamily(
        "zephyr", "zephyr", "zephyr_7b_beta_lora_alpaca_e3", "HuggingFaceH4/zephyr-7b-beta",
        dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_act="silu", hidden_size=64,
             intermediate_size=224, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=2,
             max_position_embeddings=32768, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=4096,
             tie_word_embeddings=False, **_ids("<s>", "</s>", "</s>")),
        dict(LLAMA_TOKENS, pad_token="</s>"), LLAMA_SPECIALS),
    # lmsys/vicuna-7b-v1.5: Llama-2-7B's layout (MHA, RoPE theta 1e4), untied, pad = <unk>.
    TinyFamily(
        "vicuna", "vicuna", "vicuna_7b_v1_5_lora_alpaca_e3", "lmsys/vicuna-7b-v1.5",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=64,
             intermediate_size=172, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None,
             attention_bias=False, pretraining_tp=1, tie_word_embeddings=False,
             **_ids("<s>", "</s>", "<unk>")),
        dict(LLAMA_TOKENS, pad_token="<unk>"), LLAMA_SPECIALS, chat_template=False),
    # HuggingFaceTB/SmolLM2-135M-Instruct: Llama layout, GQA 9:3 (3:1), explicit head_dim 64, RoPE theta
    # 1e5, tied output; ChatML with <|im_start|> as BOS and <|im_end|> as EOS and pad.
    TinyFamily(
        "smollm2", "smollm2", "smollm2_135m_instruct_lora_alpaca_e3", "HuggingFaceTB/SmolLM2-135M-Instruct",
        dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu", hidden_size=48,
             intermediate_size=128, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
             num_hidden_layers=2, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
             rope_scaling=None, attention_bias=False, mlp_bias=False, pretraining_tp=1,
             tie_word_embeddings=True, **_ids("<|im_start|>", "<|im_end|>", "<|im_end|>")),
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
         "pad_token": "<|im_end|>"}, CHATML_SPECIALS),
]

# Families whose hub checkpoints run on their own modelling code (trust_remote_code). Their tiny
# checkpoints come from tests/assets/legacy/<folder>/ in the hub's own layout (config.json with auto_map,
# the tokenizer; tools/make_legacy_fixtures.py writes them); until a folder is there, its row is skipped
# with LEGACY_PENDING. Rows: family, the recipe, the checkpoint the folder mirrors, the folder, refusals.
LEGACY_PENDING = "legacy conversion pending (issue 19)"
LEGACY: dict[str, dict] = {
    "internlm": dict(family="internlm", recipe="internlm_chat_7b_lora_alpaca_e3",
                     hub_id="internlm/internlm-chat-7b", folder="internlm"),
    "internlm2": dict(family="internlm2", recipe="internlm2_chat_7b_lora_alpaca_e3",
                      hub_id="internlm/internlm2-chat-7b", folder="internlm2"),
    # Dynamic-NTK RoPE scaling, which xtune's GGUF writer does not write.
    "internlm2_5": dict(family="internlm2_5", recipe="internlm2_5_chat_7b_lora_alpaca_e3",
                        hub_id="internlm/internlm2_5-7b-chat", folder="internlm2_5",
                        refused={"gguf": "RoPE scaling 'dynamic'"}),
    "chatglm3": dict(family="chatglm3", recipe="chatglm3_6b_lora_alpaca_e3", hub_id="THUDM/chatglm3-6b",
                     folder="chatglm3"),
    "baichuan": dict(family="baichuan", recipe="baichuan_7b_lora_alpaca_e3",
                     hub_id="baichuan-inc/Baichuan-7B", folder="baichuan"),
    "baichuan2": dict(family="baichuan2", recipe="baichuan2_7b_chat_lora_alpaca_e3",
                      hub_id="baichuan-inc/Baichuan2-7B-Chat", folder="baichuan2_7b"),
    # ALiBi attention: no native transformers architecture holds it, so xtune refuses it by design.
    "baichuan2-13b": dict(family="baichuan2", recipe="baichuan2_13b_chat_lora_alpaca_e3",
                          hub_id="baichuan-inc/Baichuan2-13B-Chat", folder="baichuan2_13b",
                          refused={"train": "ALiBi"}),
}

# Vision-language families: trained (LoRA), exported, merged and chatted with (with a picture) on tiny
# models by tests/test_vlm_train.py, which builds each from tests/test_vlm_fixtures.py. The matrix lists
# them, points there, and checks their GGUF refusal itself. (family: (recipe, the test that runs it))
_VLM_TEST = "tests/test_vlm_train.py::test_hf_vlm_lora_learns_merges_and_chats"
VLM: dict[str, tuple[str, str]] = {
    "llava": ("llava_1_5_7b_hf_lora_mllm_demo_e3", _VLM_TEST + " (+ the two-stage LLaVA recipes)"),
    "llava_next": ("llava_v1_6_mistral_7b_hf_lora_mllm_demo_e3", _VLM_TEST),
    "qwen2_vl": ("qwen2_vl_2b_instruct_lora_mllm_demo_e3", _VLM_TEST),
    "qwen2_5_vl": ("qwen2_5_vl_3b_instruct_lora_mllm_demo_e3", _VLM_TEST),
    "internvl": ("internvl3_1b_hf_lora_mllm_demo_e3", _VLM_TEST),
    "idefics3": ("smolvlm_instruct_lora_mllm_demo_e3", _VLM_TEST),
    "smolvlm": ("smolvlm_256m_instruct_lora_mllm_demo_e3", _VLM_TEST),
}

# Image encoders: parts a LLaVA recipe composes (vision_model_name_or_path), not trainable recipes.
VISION_COMPONENTS: dict[str, str] = {
    "clip": "vision tower of the LLaVA recipes, composed with a tiny CLIP in "
            "tests/test_vlm_train.py::llava_runs",
    "siglip": "vision tower option of the LLaVA recipes (llava_*_siglip_so400m_p14_384_*); no tiny-model "
              "test composes a SigLIP LLaVA yet",
}
