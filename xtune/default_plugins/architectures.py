"""Architecture figures of the built-in models, by hub id, as each model's HF `config.json` states them.

`xtune estimate` sizes weights, gradients, optimizer states and activations from these numbers, so it
works offline for every generated recipe. Keys are `xtune.registry.Model` fields; a model missing here
is estimated from its local or cached `config.json`. tests/test_estimate.py checks that the parameters
these figures imply match each model's published size (`Model.params_b`).

Figures that differ from a plain Llama layout: Gemma's heads are 256 wide whatever the hidden size, and
Gemma, small Qwen, Llama-3.2 and SmolLM2 tie the output projection to the embedding; Mixtral, DeepSeek-MoE
and DeepSeek-V2-Lite route each token to a few of many experts (plus shared experts, after one dense
layer, for DeepSeek), and DeepSeek-V2 compresses keys and values into a 512-wide latent (kv_lora_rank).
"""


def _arch(hidden, layers, heads, kv_heads, intermediate, vocab, *, tied=False, head_dim=0, **more) -> dict:
    return dict(hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                intermediate_size=intermediate, vocab_size=vocab, tie_word_embeddings=tied, head_dim=head_dim,
                **more)


_LLAMA2_7B = _arch(4096, 32, 32, 32, 11008, 32000)
_LLAMA2_13B = _arch(5120, 40, 40, 40, 13824, 32000)
_LLAMA3_8B = _arch(4096, 32, 32, 8, 14336, 128256)
_LLAMA3_70B = _arch(8192, 80, 64, 8, 28672, 128256)
_INTERNLM2_7B = _arch(4096, 32, 32, 8, 14336, 92544)
_INTERNLM2_20B = _arch(6144, 48, 48, 8, 16384, 92544)
_MISTRAL_7B = _arch(4096, 32, 32, 8, 14336, 32000)
_MIXTRAL = _arch(4096, 32, 32, 8, 14336, 32000, num_experts=8, experts_per_token=2)
_QWEN2_0_5B = _arch(896, 24, 14, 2, 4864, 151936, tied=True)
_QWEN2_1_5B = _arch(1536, 28, 12, 2, 8960, 151936, tied=True)
_QWEN2_7B = _arch(3584, 28, 28, 4, 18944, 152064)
_QWEN2_72B = _arch(8192, 80, 64, 8, 29568, 152064)
_BAICHUAN2_7B = _arch(4096, 32, 32, 32, 11008, 125696)
_BAICHUAN2_13B = _arch(5120, 40, 40, 40, 13696, 125696)
_CHATGLM3 = _arch(4096, 28, 32, 2, 13696, 65024)
_INTERNLM_7B = _arch(4096, 32, 32, 32, 11008, 103168)
_INTERNLM_20B = _arch(5120, 60, 40, 40, 13824, 103168)
_YI_6B = _arch(4096, 32, 32, 4, 11008, 64000)
_PHI3_MINI = _arch(3072, 32, 32, 32, 8192, 32064)

ARCHITECTURES: dict[str, dict] = {
    "internlm/internlm-7b": _INTERNLM_7B,
    "internlm/internlm-chat-7b": _INTERNLM_7B,
    "internlm/internlm-20b": _INTERNLM_20B,
    "internlm/internlm-chat-20b": _INTERNLM_20B,
    "internlm/internlm2-1_8b": _arch(2048, 24, 16, 8, 8192, 92544),
    "internlm/internlm2-7b": _INTERNLM2_7B,
    "internlm/internlm2-20b": _INTERNLM2_20B,
    "internlm/internlm2-chat-1_8b": _arch(2048, 24, 16, 8, 8192, 92544),
    "internlm/internlm2-chat-7b": _INTERNLM2_7B,
    "internlm/internlm2-chat-20b": _INTERNLM2_20B,
    "internlm/internlm2_5-7b": _INTERNLM2_7B,
    "internlm/internlm2_5-7b-chat": _INTERNLM2_7B,
    "internlm/internlm2_5-20b-chat": _INTERNLM2_20B,
    "meta-llama/Llama-2-7b-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-7b-chat-hf": _LLAMA2_7B,
    "meta-llama/Llama-2-13b-hf": _LLAMA2_13B,
    "meta-llama/Llama-2-70b-hf": _arch(8192, 80, 64, 8, 28672, 32000),
    "meta-llama/Meta-Llama-3-8B": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Meta-Llama-3-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA3_8B,
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-3.2-1B-Instruct": _arch(2048, 16, 32, 8, 8192, 128256, tied=True, head_dim=64),
    "meta-llama/Llama-3.3-70B-Instruct": _LLAMA3_70B,
    "meta-llama/Llama-3.2-3B-Instruct": _arch(3072, 28, 24, 8, 8192, 128256, tied=True, head_dim=128),
    "Qwen/Qwen1.5-0.5B-Chat": _arch(1024, 24, 16, 16, 2816, 151936),
    "Qwen/Qwen1.5-1.8B-Chat": _arch(2048, 24, 16, 16, 5504, 151936),
    "Qwen/Qwen1.5-4B-Chat": _arch(2560, 40, 20, 20, 6912, 151936),
    "Qwen/Qwen1.5-7B": _arch(4096, 32, 32, 32, 11008, 151936),
    "Qwen/Qwen1.5-7B-Chat": _arch(4096, 32, 32, 32, 11008, 151936),
    "Qwen/Qwen1.5-14B-Chat": _arch(5120, 40, 40, 40, 13696, 152064),
    "Qwen/Qwen1.5-72B-Chat": _arch(8192, 80, 64, 64, 24576, 152064),
    "Qwen/Qwen2-0.5B-Instruct": _QWEN2_0_5B,
    "Qwen/Qwen2-1.5B-Instruct": _QWEN2_1_5B,
    "Qwen/Qwen2-7B-Instruct": _QWEN2_7B,
    "Qwen/Qwen2-72B-Instruct": _QWEN2_72B,
    "Qwen/Qwen2.5-0.5B-Instruct": _QWEN2_0_5B,
    "Qwen/Qwen2.5-1.5B-Instruct": _QWEN2_1_5B,
    "Qwen/Qwen2.5-3B-Instruct": _arch(2048, 36, 16, 2, 11008, 151936, tied=True),
    "Qwen/Qwen2.5-7B": _QWEN2_7B,
    "Qwen/Qwen2.5-7B-Instruct": _QWEN2_7B,
    "Qwen/Qwen2.5-14B-Instruct": _arch(5120, 48, 40, 8, 13824, 152064),
    "Qwen/Qwen2.5-32B-Instruct": _arch(5120, 64, 40, 8, 27648, 152064),
    "Qwen/Qwen2.5-72B-Instruct": _QWEN2_72B,
    "Qwen/Qwen3-0.6B": _arch(1024, 28, 16, 8, 3072, 151936, tied=True, head_dim=128),
    "Qwen/Qwen3-1.7B": _arch(2048, 28, 16, 8, 6144, 151936, tied=True, head_dim=128),
    "Qwen/Qwen3-4B": _arch(2560, 36, 32, 8, 9728, 151936, tied=True, head_dim=128),
    "Qwen/Qwen3-8B": _arch(4096, 36, 32, 8, 12288, 151936, head_dim=128),
    "Qwen/Qwen3-14B": _arch(5120, 40, 40, 8, 17408, 151936, head_dim=128),
    "Qwen/Qwen3-32B": _arch(5120, 64, 64, 8, 25600, 151936, head_dim=128),
    "THUDM/chatglm3-6b-base": _CHATGLM3,
    "THUDM/chatglm3-6b": _CHATGLM3,
    "baichuan-inc/Baichuan-7B": _arch(4096, 32, 32, 32, 11008, 64000),
    "baichuan-inc/Baichuan2-7B-Base": _BAICHUAN2_7B,
    "baichuan-inc/Baichuan2-7B-Chat": _BAICHUAN2_7B,
    "baichuan-inc/Baichuan2-13B-Base": _BAICHUAN2_13B,
    "baichuan-inc/Baichuan2-13B-Chat": _BAICHUAN2_13B,
    "mistralai/Mistral-7B-v0.1": _MISTRAL_7B,
    "mistralai/Mistral-7B-Instruct-v0.2": _MISTRAL_7B,
    "mistralai/Mistral-Nemo-Instruct-2407": _arch(5120, 40, 32, 8, 14336, 131072, head_dim=128),
    "mistralai/Mixtral-8x7B-v0.1": _MIXTRAL,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": _MIXTRAL,
    "google/gemma-2b": _arch(2048, 18, 8, 1, 16384, 256000, tied=True, head_dim=256),
    "google/gemma-7b": _arch(3072, 28, 16, 16, 24576, 256000, tied=True, head_dim=256),
    "google/gemma-2-2b-it": _arch(2304, 26, 8, 4, 9216, 256000, tied=True, head_dim=256),
    "google/gemma-2-9b-it": _arch(3584, 42, 16, 8, 14336, 256000, tied=True, head_dim=256),
    "microsoft/Phi-3-mini-4k-instruct": _PHI3_MINI,
    "microsoft/Phi-3-mini-128k-instruct": _PHI3_MINI,
    "microsoft/Phi-3.5-mini-instruct": _PHI3_MINI,
    "deepseek-ai/deepseek-llm-7b-chat": _arch(4096, 30, 32, 32, 11008, 102400),
    "deepseek-ai/deepseek-moe-16b-chat": _arch(2048, 28, 16, 16, 10944, 102400, num_experts=64,
                                               experts_per_token=6, num_shared_experts=2,
                                               moe_intermediate_size=1408, first_dense_layers=1),
    "deepseek-ai/DeepSeek-V2-Lite-Chat": _arch(2048, 27, 16, 16, 10944, 102400, head_dim=128, num_experts=64,
                                               experts_per_token=6, num_shared_experts=2,
                                               moe_intermediate_size=1408, first_dense_layers=1,
                                               kv_lora_rank=512, rope_head_dim=64, v_head_dim=128),
    "deepseek-ai/deepseek-coder-1.3b-instruct": _arch(2048, 24, 16, 16, 5504, 32256),
    "deepseek-ai/deepseek-coder-6.7b-instruct": _arch(4096, 32, 32, 32, 11008, 32256),
    "01-ai/Yi-6B": _YI_6B,
    "01-ai/Yi-34B": _arch(7168, 60, 56, 8, 20480, 64000),
    "01-ai/Yi-1.5-6B-Chat": _YI_6B,
    "01-ai/Yi-1.5-9B-Chat": _arch(4096, 48, 32, 4, 11008, 64000),
    "HuggingFaceH4/zephyr-7b-beta": _MISTRAL_7B,
    "lmsys/vicuna-7b-v1.5": _LLAMA2_7B,
    "lmsys/vicuna-13b-v1.5": _LLAMA2_13B,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _arch(576, 30, 9, 3, 1536, 49152, tied=True, head_dim=64),
    "HuggingFaceTB/SmolLM2-360M-Instruct": _arch(960, 32, 15, 5, 2560, 49152, tied=True, head_dim=64),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": _arch(2048, 24, 32, 32, 8192, 49152, tied=True, head_dim=64),
}
