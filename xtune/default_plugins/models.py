"""Built-in model families: one row each, with the checkpoints xtune has recipes for.

A row is the family's model adapter (matched by the `model_type` of the HF config: its default chat
template, LoRA targets, special-token and attention quirks) plus its models (recipe-name prefix, hub id,
title, billions of parameters, instruction-tuned or base). The recipe generator (`tools/gen_recipes.py`)
reads these entries from the registry, so adding a family is one row here (and its chat template, if
new) followed by a regenerate. Architecture figures for `xtune estimate` come from
`xtune.default_plugins.architectures`, keyed by hub id.

`trust_remote_code` marks families whose hub checkpoints need their own modelling code; their recipes
set `trust_remote_code = True` visibly, so running hub code is always the user's choice.
"""

from xtune.default_plugins.architectures import ARCHITECTURES
from xtune.hookspecs import hookimpl
from xtune.registry import Model, ModelAdapter

ADAPTERS: list[ModelAdapter] = []
MODELS: list[Model] = []


def family(name: str, model_types: tuple[str, ...], template: str, *, models: list[tuple], **adapter) -> None:
    """One family: its adapter, and its models as (key, hub id, title, billions[, chat])."""
    ADAPTERS.append(
        ModelAdapter(
            name=name,
            model_types=model_types,
            default_template=template,
            description=f"{name} models (model_type {', '.join(model_types)})",
            **adapter,
        )
    )
    for key, hub_id, title, params_b, *chat in models:
        MODELS.append(
            Model(
                name=key,
                family=name,
                hub_id=hub_id,
                title=title,
                params_b=params_b,
                chat=chat[0] if chat else True,
                description=title,
                **ARCHITECTURES.get(hub_id, {}),
            )
        )


# One row per family, one line per model: a table, so the formatter leaves it as written.
# fmt: off
family("internlm", ("internlm",), "internlm_chat", trust_remote_code=True, supports_flash_attn=False, models=[
    ("internlm_7b", "internlm/internlm-7b", "InternLM-7B", 7, False),
    ("internlm_chat_7b", "internlm/internlm-chat-7b", "InternLM-Chat-7B", 7),
    ("internlm_20b", "internlm/internlm-20b", "InternLM-20B", 20, False),
    ("internlm_chat_20b", "internlm/internlm-chat-20b", "InternLM-Chat-20B", 20),
])
family("internlm2", ("internlm2",), "internlm2_chat", trust_remote_code=True, models=[
    ("internlm2_1_8b", "internlm/internlm2-1_8b", "InternLM2-1.8B", 1.8, False),
    ("internlm2_7b", "internlm/internlm2-7b", "InternLM2-7B", 7, False),
    ("internlm2_20b", "internlm/internlm2-20b", "InternLM2-20B", 20, False),
    ("internlm2_chat_1_8b", "internlm/internlm2-chat-1_8b", "InternLM2-Chat-1.8B", 1.8),
    ("internlm2_chat_7b", "internlm/internlm2-chat-7b", "InternLM2-Chat-7B", 7),
    ("internlm2_chat_20b", "internlm/internlm2-chat-20b", "InternLM2-Chat-20B", 20),
])
family("internlm2_5", ("internlm2",), "internlm2_chat", trust_remote_code=True, models=[
    ("internlm2_5_7b", "internlm/internlm2_5-7b", "InternLM2.5-7B", 7, False),
    ("internlm2_5_chat_7b", "internlm/internlm2_5-7b-chat", "InternLM2.5-7B-Chat", 7),
    ("internlm2_5_chat_20b", "internlm/internlm2_5-20b-chat", "InternLM2.5-20B-Chat", 20),
])
family("llama2", ("llama",), "llama2_chat", models=[
    ("llama2_7b", "meta-llama/Llama-2-7b-hf", "Llama-2-7B", 7, False),
    ("llama2_7b_chat", "meta-llama/Llama-2-7b-chat-hf", "Llama-2-7B-Chat", 7),
    ("llama2_13b", "meta-llama/Llama-2-13b-hf", "Llama-2-13B", 13, False),
    ("llama2_70b", "meta-llama/Llama-2-70b-hf", "Llama-2-70B", 70, False),
])
family("llama3", ("llama",), "llama3_chat", models=[
    ("llama3_8b", "meta-llama/Meta-Llama-3-8B", "Llama-3-8B", 8, False),
    ("llama3_8b_instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3-8B-Instruct", 8),
    ("llama3_70b_instruct", "meta-llama/Meta-Llama-3-70B-Instruct", "Llama-3-70B-Instruct", 70),
])
family("llama3_1", ("llama",), "llama3_1_chat", models=[
    ("llama3_1_8b_instruct", "meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct", 8),
    ("llama3_1_70b_instruct", "meta-llama/Llama-3.1-70B-Instruct", "Llama-3.1-70B-Instruct", 70),
])
family("llama3_2", ("llama",), "llama3_2_chat", models=[
    ("llama3_2_1b_instruct", "meta-llama/Llama-3.2-1B-Instruct", "Llama-3.2-1B-Instruct", 1.2),
    ("llama3_2_3b_instruct", "meta-llama/Llama-3.2-3B-Instruct", "Llama-3.2-3B-Instruct", 3.2),
])
family("qwen1_5", ("qwen2",), "qwen_chat", models=[
    ("qwen1_5_0_5b_chat", "Qwen/Qwen1.5-0.5B-Chat", "Qwen1.5-0.5B-Chat", 0.5),
    ("qwen1_5_1_8b_chat", "Qwen/Qwen1.5-1.8B-Chat", "Qwen1.5-1.8B-Chat", 1.8),
    ("qwen1_5_4b_chat", "Qwen/Qwen1.5-4B-Chat", "Qwen1.5-4B-Chat", 4),
    ("qwen1_5_7b", "Qwen/Qwen1.5-7B", "Qwen1.5-7B", 7, False),
    ("qwen1_5_7b_chat", "Qwen/Qwen1.5-7B-Chat", "Qwen1.5-7B-Chat", 7),
    ("qwen1_5_14b_chat", "Qwen/Qwen1.5-14B-Chat", "Qwen1.5-14B-Chat", 14),
    ("qwen1_5_72b_chat", "Qwen/Qwen1.5-72B-Chat", "Qwen1.5-72B-Chat", 72),
])
family("qwen2", ("qwen2",), "qwen_chat", models=[
    ("qwen2_0_5b_instruct", "Qwen/Qwen2-0.5B-Instruct", "Qwen2-0.5B-Instruct", 0.5),
    ("qwen2_1_5b_instruct", "Qwen/Qwen2-1.5B-Instruct", "Qwen2-1.5B-Instruct", 1.5),
    ("qwen2_7b_instruct", "Qwen/Qwen2-7B-Instruct", "Qwen2-7B-Instruct", 7),
    ("qwen2_72b_instruct", "Qwen/Qwen2-72B-Instruct", "Qwen2-72B-Instruct", 72),
])
family("qwen2_5", ("qwen2",), "qwen2_5_chat", models=[
    ("qwen2_5_0_5b_instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct", 0.5),
    ("qwen2_5_1_5b_instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5-1.5B-Instruct", 1.5),
    ("qwen2_5_3b_instruct", "Qwen/Qwen2.5-3B-Instruct", "Qwen2.5-3B-Instruct", 3),
    ("qwen2_5_7b", "Qwen/Qwen2.5-7B", "Qwen2.5-7B", 7, False),
    ("qwen2_5_7b_instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct", 7),
    ("qwen2_5_14b_instruct", "Qwen/Qwen2.5-14B-Instruct", "Qwen2.5-14B-Instruct", 14),
    ("qwen2_5_32b_instruct", "Qwen/Qwen2.5-32B-Instruct", "Qwen2.5-32B-Instruct", 32),
    ("qwen2_5_72b_instruct", "Qwen/Qwen2.5-72B-Instruct", "Qwen2.5-72B-Instruct", 72),
])
family("qwen3", ("qwen3",), "qwen3_chat", models=[
    ("qwen3_0_6b", "Qwen/Qwen3-0.6B", "Qwen3-0.6B", 0.6),
    ("qwen3_1_7b", "Qwen/Qwen3-1.7B", "Qwen3-1.7B", 1.7),
    ("qwen3_4b", "Qwen/Qwen3-4B", "Qwen3-4B", 4),
    ("qwen3_8b", "Qwen/Qwen3-8B", "Qwen3-8B", 8),
    ("qwen3_14b", "Qwen/Qwen3-14B", "Qwen3-14B", 14),
    ("qwen3_32b", "Qwen/Qwen3-32B", "Qwen3-32B", 32),
])
family("chatglm3", ("chatglm",), "chatglm3", trust_remote_code=True, supports_flash_attn=False,
       layers_path="transformer.encoder.layers", models=[
    ("chatglm3_6b_base", "THUDM/chatglm3-6b-base", "ChatGLM3-6B-Base", 6, False),
    ("chatglm3_6b", "THUDM/chatglm3-6b", "ChatGLM3-6B", 6),
])
family("baichuan2", ("baichuan",), "baichuan2_chat", trust_remote_code=True, supports_flash_attn=False,
       models=[
    ("baichuan2_7b_base", "baichuan-inc/Baichuan2-7B-Base", "Baichuan2-7B-Base", 7, False),
    ("baichuan2_7b_chat", "baichuan-inc/Baichuan2-7B-Chat", "Baichuan2-7B-Chat", 7),
    ("baichuan2_13b_base", "baichuan-inc/Baichuan2-13B-Base", "Baichuan2-13B-Base", 13, False),
    ("baichuan2_13b_chat", "baichuan-inc/Baichuan2-13B-Chat", "Baichuan2-13B-Chat", 13),
])
family("mistral", ("mistral",), "mistral", models=[
    ("mistral_7b", "mistralai/Mistral-7B-v0.1", "Mistral-7B-v0.1", 7, False),
    ("mistral_7b_instruct_v0_2", "mistralai/Mistral-7B-Instruct-v0.2", "Mistral-7B-Instruct-v0.2", 7),
])
family("mistral_nemo", ("mistral",), "mistral_nemo", models=[
    ("mistral_nemo_12b_instruct", "mistralai/Mistral-Nemo-Instruct-2407", "Mistral-Nemo-Instruct-2407", 12),
])
family("mixtral", ("mixtral",), "mistral", models=[
    ("mixtral_8x7b", "mistralai/Mixtral-8x7B-v0.1", "Mixtral-8x7B-v0.1", 47, False),
    ("mixtral_8x7b_instruct", "mistralai/Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", 47),
])
family("gemma", ("gemma", "gemma2"), "gemma", pad_token="<pad>", models=[
    ("gemma_2b", "google/gemma-2b", "Gemma-2B", 2.5, False),
    ("gemma_7b", "google/gemma-7b", "Gemma-7B", 8.5, False),
    ("gemma2_2b_it", "google/gemma-2-2b-it", "Gemma-2-2B-it", 2.6),
    ("gemma2_9b_it", "google/gemma-2-9b-it", "Gemma-2-9B-it", 9.2),
])
family("phi3", ("phi3",), "phi3_chat", models=[
    ("phi3_mini_4k_instruct", "microsoft/Phi-3-mini-4k-instruct", "Phi-3-mini-4k-instruct", 3.8),
    ("phi3_mini_128k_instruct", "microsoft/Phi-3-mini-128k-instruct", "Phi-3-mini-128k-instruct", 3.8),
    ("phi3_5_mini_instruct", "microsoft/Phi-3.5-mini-instruct", "Phi-3.5-mini-instruct", 3.8),
])
family("deepseek", ("llama", "deepseek_v2", "deepseek_v3"), "deepseek_chat", models=[
    ("deepseek_llm_7b_chat", "deepseek-ai/deepseek-llm-7b-chat", "DeepSeek-LLM-7B-Chat", 7),
    ("deepseek_moe_16b_chat", "deepseek-ai/deepseek-moe-16b-chat", "DeepSeek-MoE-16B-Chat", 16),
    ("deepseek_v2_lite_chat", "deepseek-ai/DeepSeek-V2-Lite-Chat", "DeepSeek-V2-Lite-Chat", 16),
])
family("deepseek_coder", ("llama",), "deepseek_coder", models=[
    ("deepseek_coder_1_3b_instruct", "deepseek-ai/deepseek-coder-1.3b-instruct",
     "DeepSeek-Coder-1.3B-Instruct", 1.3),
    ("deepseek_coder_6_7b_instruct", "deepseek-ai/deepseek-coder-6.7b-instruct",
     "DeepSeek-Coder-6.7B-Instruct", 6.7),
])
family("yi", ("llama",), "yi_chat", models=[
    ("yi_6b", "01-ai/Yi-6B", "Yi-6B", 6, False),
    ("yi_34b", "01-ai/Yi-34B", "Yi-34B", 34, False),
    ("yi_1_5_6b_chat", "01-ai/Yi-1.5-6B-Chat", "Yi-1.5-6B-Chat", 6),
    ("yi_1_5_9b_chat", "01-ai/Yi-1.5-9B-Chat", "Yi-1.5-9B-Chat", 9),
])
family("zephyr", ("mistral",), "zephyr", models=[
    ("zephyr_7b_beta", "HuggingFaceH4/zephyr-7b-beta", "Zephyr-7B-beta", 7),
])
family("vicuna", ("llama",), "vicuna", models=[
    ("vicuna_7b_v1_5", "lmsys/vicuna-7b-v1.5", "Vicuna-7B-v1.5", 7),
    ("vicuna_13b_v1_5", "lmsys/vicuna-13b-v1.5", "Vicuna-13B-v1.5", 13),
])
family("smollm2", ("llama",), "smollm2_chat", models=[
    ("smollm2_135m_instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct", 0.135),
    ("smollm2_360m_instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct", 0.36),
    ("smollm2_1_7b_instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-1.7B-Instruct", 1.7),
])
# fmt: on


@hookimpl
def register_model_adapters(register):
    for adapter in ADAPTERS:
        register(adapter)


@hookimpl
def register_models(register):
    for model in MODELS:
        register(model)
