"""Built-in model adapters: the families xtune knows, keyed by the `model_type` of their HF config.

`trust_remote_code` marks families whose hub checkpoints need their own modelling code; recipes of
those families set `trust_remote_code = True` explicitly, so it is always the user's visible choice.
"""

from xtune.hookspecs import hookimpl
from xtune.registry import ModelAdapter

# name, model_types, default template, extra fields
_FAMILIES = [
    ("internlm", ("internlm",), "internlm_chat", dict(trust_remote_code=True, supports_flash_attn=False)),
    ("internlm2", ("internlm2",), "internlm2_chat", dict(trust_remote_code=True)),
    ("internlm2_5", ("internlm2",), "internlm2_chat", dict(trust_remote_code=True)),
    ("llama2", ("llama",), "llama2_chat", {}),
    ("llama3", ("llama",), "llama3_chat", {}),
    ("llama3_1", ("llama",), "llama3_1_chat", {}),
    ("llama3_2", ("llama",), "llama3_2_chat", {}),
    ("qwen1_5", ("qwen2",), "qwen_chat", {}),
    ("qwen2", ("qwen2",), "qwen_chat", {}),
    ("qwen2_5", ("qwen2",), "qwen2_5_chat", {}),
    ("qwen3", ("qwen3",), "qwen3_chat", {}),
    ("chatglm3", ("chatglm",), "chatglm3", dict(trust_remote_code=True, supports_flash_attn=False, layers_path="transformer.encoder.layers")),
    ("baichuan2", ("baichuan",), "baichuan2_chat", dict(trust_remote_code=True, supports_flash_attn=False)),
    ("mistral", ("mistral",), "mistral", {}),
    ("mistral_nemo", ("mistral",), "mistral_nemo", {}),
    ("mixtral", ("mixtral",), "mistral", {}),
    ("gemma", ("gemma", "gemma2"), "gemma", dict(pad_token="<pad>")),
    ("phi3", ("phi3",), "phi3_chat", {}),
    ("deepseek", ("llama", "deepseek_v2", "deepseek_v3"), "deepseek_chat", {}),
    ("deepseek_coder", ("llama",), "deepseek_coder", {}),
    ("yi", ("llama",), "yi_chat", {}),
    ("zephyr", ("mistral",), "zephyr", {}),
    ("vicuna", ("llama",), "vicuna", {}),
    ("smollm2", ("llama",), "smollm2_chat", {}),
]


@hookimpl
def register_model_adapters(register):
    for name, model_types, template, extra in _FAMILIES:
        register(
            ModelAdapter(
                name=name,
                description=f"{name} models (model_type {', '.join(model_types)})",
                model_types=model_types,
                default_template=template,
                **extra,
            )
        )
