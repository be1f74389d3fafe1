#!/usr/bin/env python
"""Generate xtune's recipes from one declarative matrix: model x method x dataset x epochs.

    python tools/gen_recipes.py           # (re)write recipes/<family>/*.py and recipes/index.json
    python tools/gen_recipes.py --check   # exit 1 if regenerating would change, add or remove a file

The recipes are committed; CI runs --check so a hand edit or a stale file never slips in. To add a
model, a data set or a method, edit the tables below and rerun. Every recipe names its model adapter,
dataset map, chat template and tuning method by registry name, so plugins can supply any of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


@dataclass(frozen=True)
class Model:
    key: str  # recipe name prefix, e.g. internlm2_chat_7b
    family: str  # model adapter name
    hub_id: str
    title: str  # human name for the header
    size_b: float  # parameters, billions (decides full fine-tuning and batch settings)
    chat: bool = True  # instruction-tuned (else a base model)


@dataclass(frozen=True)
class Data:
    name: str  # dataset map name
    epochs: int
    data_path: str | None  # None: the dataset map's own default source
    language: str = "en"
    system: str = ""
    note: str = ""


# ------------------------------------------------------------------------------------------- models
# family -> (chat template, trust_remote_code, models)
FAMILIES: dict[str, tuple[str, bool, list[Model]]] = {}


def family(name: str, template: str, trust_remote_code: bool, *models: tuple) -> None:
    FAMILIES[name] = (template, trust_remote_code, [Model(m[0], name, m[1], m[2], m[3], *m[4:]) for m in models])


family("internlm", "internlm_chat", True,
       ("internlm_7b", "internlm/internlm-7b", "InternLM-7B", 7, False),
       ("internlm_chat_7b", "internlm/internlm-chat-7b", "InternLM-Chat-7B", 7),
       ("internlm_20b", "internlm/internlm-20b", "InternLM-20B", 20, False),
       ("internlm_chat_20b", "internlm/internlm-chat-20b", "InternLM-Chat-20B", 20))
family("internlm2", "internlm2_chat", True,
       ("internlm2_1_8b", "internlm/internlm2-1_8b", "InternLM2-1.8B", 1.8, False),
       ("internlm2_7b", "internlm/internlm2-7b", "InternLM2-7B", 7, False),
       ("internlm2_20b", "internlm/internlm2-20b", "InternLM2-20B", 20, False),
       ("internlm2_chat_1_8b", "internlm/internlm2-chat-1_8b", "InternLM2-Chat-1.8B", 1.8),
       ("internlm2_chat_7b", "internlm/internlm2-chat-7b", "InternLM2-Chat-7B", 7),
       ("internlm2_chat_20b", "internlm/internlm2-chat-20b", "InternLM2-Chat-20B", 20))
family("internlm2_5", "internlm2_chat", True,
       ("internlm2_5_7b", "internlm/internlm2_5-7b", "InternLM2.5-7B", 7, False),
       ("internlm2_5_chat_7b", "internlm/internlm2_5-7b-chat", "InternLM2.5-7B-Chat", 7),
       ("internlm2_5_chat_20b", "internlm/internlm2_5-20b-chat", "InternLM2.5-20B-Chat", 20))
family("llama2", "llama2_chat", False,
       ("llama2_7b", "meta-llama/Llama-2-7b-hf", "Llama-2-7B", 7, False),
       ("llama2_7b_chat", "meta-llama/Llama-2-7b-chat-hf", "Llama-2-7B-Chat", 7),
       ("llama2_13b", "meta-llama/Llama-2-13b-hf", "Llama-2-13B", 13, False),
       ("llama2_70b", "meta-llama/Llama-2-70b-hf", "Llama-2-70B", 70, False))
family("llama3", "llama3_chat", False,
       ("llama3_8b", "meta-llama/Meta-Llama-3-8B", "Llama-3-8B", 8, False),
       ("llama3_8b_instruct", "meta-llama/Meta-Llama-3-8B-Instruct", "Llama-3-8B-Instruct", 8),
       ("llama3_70b_instruct", "meta-llama/Meta-Llama-3-70B-Instruct", "Llama-3-70B-Instruct", 70))
family("llama3_1", "llama3_1_chat", False,
       ("llama3_1_8b_instruct", "meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct", 8),
       ("llama3_1_70b_instruct", "meta-llama/Llama-3.1-70B-Instruct", "Llama-3.1-70B-Instruct", 70))
family("llama3_2", "llama3_2_chat", False,
       ("llama3_2_1b_instruct", "meta-llama/Llama-3.2-1B-Instruct", "Llama-3.2-1B-Instruct", 1.2),
       ("llama3_2_3b_instruct", "meta-llama/Llama-3.2-3B-Instruct", "Llama-3.2-3B-Instruct", 3.2))
family("qwen1_5", "qwen_chat", False,
       ("qwen1_5_0_5b_chat", "Qwen/Qwen1.5-0.5B-Chat", "Qwen1.5-0.5B-Chat", 0.5),
       ("qwen1_5_1_8b_chat", "Qwen/Qwen1.5-1.8B-Chat", "Qwen1.5-1.8B-Chat", 1.8),
       ("qwen1_5_4b_chat", "Qwen/Qwen1.5-4B-Chat", "Qwen1.5-4B-Chat", 4),
       ("qwen1_5_7b", "Qwen/Qwen1.5-7B", "Qwen1.5-7B", 7, False),
       ("qwen1_5_7b_chat", "Qwen/Qwen1.5-7B-Chat", "Qwen1.5-7B-Chat", 7),
       ("qwen1_5_14b_chat", "Qwen/Qwen1.5-14B-Chat", "Qwen1.5-14B-Chat", 14),
       ("qwen1_5_72b_chat", "Qwen/Qwen1.5-72B-Chat", "Qwen1.5-72B-Chat", 72))
family("qwen2", "qwen_chat", False,
       ("qwen2_0_5b_instruct", "Qwen/Qwen2-0.5B-Instruct", "Qwen2-0.5B-Instruct", 0.5),
       ("qwen2_1_5b_instruct", "Qwen/Qwen2-1.5B-Instruct", "Qwen2-1.5B-Instruct", 1.5),
       ("qwen2_7b_instruct", "Qwen/Qwen2-7B-Instruct", "Qwen2-7B-Instruct", 7),
       ("qwen2_72b_instruct", "Qwen/Qwen2-72B-Instruct", "Qwen2-72B-Instruct", 72))
family("qwen2_5", "qwen2_5_chat", False,
       ("qwen2_5_0_5b_instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct", 0.5),
       ("qwen2_5_1_5b_instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5-1.5B-Instruct", 1.5),
       ("qwen2_5_3b_instruct", "Qwen/Qwen2.5-3B-Instruct", "Qwen2.5-3B-Instruct", 3),
       ("qwen2_5_7b", "Qwen/Qwen2.5-7B", "Qwen2.5-7B", 7, False),
       ("qwen2_5_7b_instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5-7B-Instruct", 7),
       ("qwen2_5_14b_instruct", "Qwen/Qwen2.5-14B-Instruct", "Qwen2.5-14B-Instruct", 14),
       ("qwen2_5_32b_instruct", "Qwen/Qwen2.5-32B-Instruct", "Qwen2.5-32B-Instruct", 32),
       ("qwen2_5_72b_instruct", "Qwen/Qwen2.5-72B-Instruct", "Qwen2.5-72B-Instruct", 72))
family("qwen3", "qwen3_chat", False,
       ("qwen3_0_6b", "Qwen/Qwen3-0.6B", "Qwen3-0.6B", 0.6),
       ("qwen3_1_7b", "Qwen/Qwen3-1.7B", "Qwen3-1.7B", 1.7),
       ("qwen3_4b", "Qwen/Qwen3-4B", "Qwen3-4B", 4),
       ("qwen3_8b", "Qwen/Qwen3-8B", "Qwen3-8B", 8),
       ("qwen3_14b", "Qwen/Qwen3-14B", "Qwen3-14B", 14),
       ("qwen3_32b", "Qwen/Qwen3-32B", "Qwen3-32B", 32))
family("chatglm3", "chatglm3", True,
       ("chatglm3_6b_base", "THUDM/chatglm3-6b-base", "ChatGLM3-6B-Base", 6, False),
       ("chatglm3_6b", "THUDM/chatglm3-6b", "ChatGLM3-6B", 6))
family("baichuan2", "baichuan2_chat", True,
       ("baichuan2_7b_base", "baichuan-inc/Baichuan2-7B-Base", "Baichuan2-7B-Base", 7, False),
       ("baichuan2_7b_chat", "baichuan-inc/Baichuan2-7B-Chat", "Baichuan2-7B-Chat", 7),
       ("baichuan2_13b_base", "baichuan-inc/Baichuan2-13B-Base", "Baichuan2-13B-Base", 13, False),
       ("baichuan2_13b_chat", "baichuan-inc/Baichuan2-13B-Chat", "Baichuan2-13B-Chat", 13))
family("mistral", "mistral", False,
       ("mistral_7b", "mistralai/Mistral-7B-v0.1", "Mistral-7B-v0.1", 7, False),
       ("mistral_7b_instruct_v0_2", "mistralai/Mistral-7B-Instruct-v0.2", "Mistral-7B-Instruct-v0.2", 7))
family("mistral_nemo", "mistral_nemo", False,
       ("mistral_nemo_12b_instruct", "mistralai/Mistral-Nemo-Instruct-2407", "Mistral-Nemo-Instruct-2407", 12))
family("mixtral", "mistral", False,
       ("mixtral_8x7b", "mistralai/Mixtral-8x7B-v0.1", "Mixtral-8x7B-v0.1", 47, False),
       ("mixtral_8x7b_instruct", "mistralai/Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", 47))
family("gemma", "gemma", False,
       ("gemma_2b", "google/gemma-2b", "Gemma-2B", 2.5, False),
       ("gemma_7b", "google/gemma-7b", "Gemma-7B", 8.5, False),
       ("gemma2_2b_it", "google/gemma-2-2b-it", "Gemma-2-2B-it", 2.6),
       ("gemma2_9b_it", "google/gemma-2-9b-it", "Gemma-2-9B-it", 9.2))
family("phi3", "phi3_chat", False,
       ("phi3_mini_4k_instruct", "microsoft/Phi-3-mini-4k-instruct", "Phi-3-mini-4k-instruct", 3.8),
       ("phi3_mini_128k_instruct", "microsoft/Phi-3-mini-128k-instruct", "Phi-3-mini-128k-instruct", 3.8),
       ("phi3_5_mini_instruct", "microsoft/Phi-3.5-mini-instruct", "Phi-3.5-mini-instruct", 3.8))
family("deepseek", "deepseek_chat", False,
       ("deepseek_llm_7b_chat", "deepseek-ai/deepseek-llm-7b-chat", "DeepSeek-LLM-7B-Chat", 7),
       ("deepseek_moe_16b_chat", "deepseek-ai/deepseek-moe-16b-chat", "DeepSeek-MoE-16B-Chat", 16),
       ("deepseek_v2_lite_chat", "deepseek-ai/DeepSeek-V2-Lite-Chat", "DeepSeek-V2-Lite-Chat", 16))
family("deepseek_coder", "deepseek_coder", False,
       ("deepseek_coder_1_3b_instruct", "deepseek-ai/deepseek-coder-1.3b-instruct", "DeepSeek-Coder-1.3B-Instruct", 1.3),
       ("deepseek_coder_6_7b_instruct", "deepseek-ai/deepseek-coder-6.7b-instruct", "DeepSeek-Coder-6.7B-Instruct", 6.7))
family("yi", "yi_chat", False,
       ("yi_6b", "01-ai/Yi-6B", "Yi-6B", 6, False),
       ("yi_34b", "01-ai/Yi-34B", "Yi-34B", 34, False),
       ("yi_1_5_6b_chat", "01-ai/Yi-1.5-6B-Chat", "Yi-1.5-6B-Chat", 6),
       ("yi_1_5_9b_chat", "01-ai/Yi-1.5-9B-Chat", "Yi-1.5-9B-Chat", 9))
family("zephyr", "zephyr", False,
       ("zephyr_7b_beta", "HuggingFaceH4/zephyr-7b-beta", "Zephyr-7B-beta", 7))
family("vicuna", "vicuna", False,
       ("vicuna_7b_v1_5", "lmsys/vicuna-7b-v1.5", "Vicuna-7B-v1.5", 7),
       ("vicuna_13b_v1_5", "lmsys/vicuna-13b-v1.5", "Vicuna-13B-v1.5", 13))
family("smollm2", "smollm2_chat", False,
       ("smollm2_135m_instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct", 0.135),
       ("smollm2_360m_instruct", "HuggingFaceTB/SmolLM2-360M-Instruct", "SmolLM2-360M-Instruct", 0.36),
       ("smollm2_1_7b_instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-1.7B-Instruct", 1.7))

# -------------------------------------------------------------------------------------------- data
_ZH_EN_INPUTS = ["请给我介绍五个上海的景点", "Please tell me five scenic spots in Shanghai"]
DATASETS = {d.name: d for d in [
    Data("alpaca", 3, "tatsu-lab/alpaca"),
    Data("alpaca_zh", 3, "silk-road/alpaca-data-gpt4-chinese", "zh"),
    Data("alpaca_enzh", 3, None, "en+zh", note="alpaca + alpaca_zh from the hub"),
    Data("alpaca_enzh_oasst1", 3, None, "en+zh", note="alpaca + alpaca_zh + oasst1 from the hub"),
    Data("oasst1", 3, "timdettmers/openassistant-guanaco"),
    Data("code_alpaca", 3, "HuggingFaceH4/CodeAlpaca_20K"),
    Data("medical", 1, "shibing624/medical", "zh"),
    Data("open_platypus", 3, "garage-bAInd/Open-Platypus"),
    Data("openorca", 1, "Open-Orca/OpenOrca"),
    Data("sql", 3, "b-mc2/sql-create-context"),
    Data("tiny_codes", 1, "nampdn-ai/tiny-codes"),
    Data("colorist", 5, "burkelibbey/colors"),
    Data("lawyer", 3, "ShengbinYue/DISC-Law-SFT", "zh"),
    Data("arxiv_gentitle", 3, "./data/arxiv_data.json",
         note="download the arXiv metadata from Kaggle (Cornell-University/arxiv) and export it to JSON"),
    Data("moss_sft", 1, "fnlp/moss-003-sft-data", "zh"),
    Data("wizardlm", 1, "WizardLMTeam/WizardLM_evol_instruct_V2_196k"),
    Data("self_cognition", 3, None, "en+zh", note="xtune's own self-cognition set; or your alpaca file"),
]}
EVALUATION_INPUTS = {
    "sql": ["CREATE TABLE station (name VARCHAR, lat VARCHAR, city VARCHAR)\nFind the name, latitude, and city of "
            "stations with latitude above 50.", "CREATE TABLE weather (zip_code VARCHAR, mean_visibility_miles "
            "INTEGER)\n找到mean_visibility_miles最大的zip_code。"],
    "colorist": ["请给我一个像天空一样清澈透明的蓝色。", "Please give me a clear blue like the sky."],
    "code_alpaca": ["写一个Python函数，将十进制数转换为二进制数。", "Write a Python function that reverses a string."],
    "tiny_codes": ["写一个Python函数，将十进制数转换为二进制数。", "Write a Python function that reverses a string."],
    "medical": ["我有家族遗传性的过敏，请问可以可以献血吗？", "我爷爷有高血压，请问他可以喝咖啡吗？"],
    "lawyer": ["请问离婚需要准备什么材料？", "销售鳄鱼皮包违法吗？"],
    "arxiv_gentitle": ["We present a method to fine-tune large language models with 4-bit quantised weights and "
                       "low-rank adapters, reducing memory use enough to train a 65B model on one GPU."],
    "self_cognition": ["你是谁？", "Who are you?", "Who made you?"],
}

# ------------------------------------------------------------------------------------------ matrix
METHODS = {
    "full": dict(lr=2e-5, title="full fine-tuning"),
    "lora": dict(lr=2e-4, title="LoRA"),
    "qlora": dict(lr=2e-4, title="QLoRA (4-bit NF4 base)"),
}
STANDARD = {
    "qlora": ["alpaca", "alpaca_zh", "alpaca_enzh", "oasst1", "code_alpaca"],
    "lora": ["alpaca", "oasst1", "self_cognition"],
}
FULL_DATASETS = ["alpaca", "oasst1"]  # for models small enough to train in full (<= 8B)
# Flagship models get QLoRA recipes on every public data set, as XTuner ships them.
FLAGSHIPS = ["internlm_7b", "internlm_chat_7b", "internlm2_chat_7b", "internlm2_5_chat_7b", "llama2_7b",
             "llama3_8b_instruct", "qwen1_5_7b_chat", "qwen2_5_7b_instruct", "chatglm3_6b", "baichuan2_7b_chat"]


def matrix():
    """Yield (model, template, trust_remote_code, method, data) for every recipe."""
    for template, remote, models in FAMILIES.values():
        for model in models:
            plan = {m: list(ds) for m, ds in STANDARD.items()}
            if model.key in FLAGSHIPS:
                plan["qlora"] = [d for d in DATASETS if d != "self_cognition"] + ["self_cognition"]
            if model.size_b <= 8:
                plan["full"] = FULL_DATASETS
            for method, names in plan.items():
                for name in names:
                    yield model, template, remote, method, DATASETS[name]


def recipe_name(model: Model, method: str, data: Data) -> str:
    return f"{model.key}_{method}_{data.name}_e{data.epochs}"


# ------------------------------------------------------------------------------------------ render
def _py(value) -> str:
    """A Python literal as a recipe shows it (single quotes, like mmengine configs)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, float) and 0 < value < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"  # 2e-4, not 0.0002
    return repr(value)


def render(model: Model, template: str, remote: bool, method: str, data: Data) -> str:
    name = recipe_name(model, method, data)
    meta = METHODS[method]
    small = model.size_b <= 2
    batch_size = 1
    accumulative_counts = 16
    max_length = 2048
    deepspeed = "zero3" if method == "full" and model.size_b > 2 else "zero2"
    downloads = f"the model {model.hub_id}"
    if data.data_path and not data.data_path.startswith("."):
        downloads += f" and the data set {data.data_path}"
    elif data.data_path is None and data.name != "self_cognition":
        downloads += " and the data sets of the mixture"
    data_path = _py(data.data_path) if data.data_path else "None"
    data_comment = f"  # {data.note}" if data.note else ""
    system = data.system
    inputs = EVALUATION_INPUTS.get(data.name, _ZH_EN_INPUTS)
    remote_comment = "  # this family's modelling code comes from the hub" if remote else ""
    quant = ("dict(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True,\n"
             "                      bnb_4bit_compute_dtype='auto')") if method == "qlora" else "None"
    if method == "full":
        method_cfg = "method_cfg = dict(type=method)"
    else:
        method_cfg = ("method_cfg = dict(\n    type=method,\n    r=64,\n    lora_alpha=16,\n    lora_dropout=0.1,\n"
                      "    target_modules='auto',  # the model adapter's choice ('all-linear' by default)\n)")
    extra_settings = extra_data = ""
    if data.name == "self_cognition":
        extra_data = ("    self_cognition_name=self_cognition_name,\n"
                      "    self_cognition_author=self_cognition_author,\n")
        extra_settings = ("\n# Self-cognition: who the model says it is\n"
                          "self_cognition_name = 'xtune assistant'\nself_cognition_author = 'the xtune team'\n")
    lines = f'''\
# =====================================================================================================
# {name}
# {meta["title"]} of {model.title} on {data.name}, {data.epochs} epoch{"s" if data.epochs > 1 else ""}.
#
#   xtune train {name} --deepspeed {deepspeed}
#   xtune train {name} --cfg-options lr=1e-4 max_length=1024 data_path=./my_data.jsonl
#
# Downloads {downloads} (Hugging Face hub; a ModelScope id or a local path works as well).
# Generated by tools/gen_recipes.py: to change it, `xtune copy-cfg {name} .` and edit the copy.
# =====================================================================================================

# ----------------------------------------------------------------------------------- PART 1  Settings
# Model
pretrained_model_name_or_path = {_py(model.hub_id)}
model_adapter = {_py(model.family)}
trust_remote_code = {remote}{remote_comment}
method = {_py(method)}

# Data
dataset_map = {_py(data.name)}
data_path = {data_path}{data_comment}
prompt_template = {_py(template)}
max_length = {max_length}
pack_to_max_length = True
use_varlen_attn = False  # varlen FlashAttention-2 over packed rows (CUDA with flash-attn)
{extra_settings}
# Scheduler & optimizer
batch_size = {batch_size}  # per device
accumulative_counts = {accumulative_counts}
dataloader_num_workers = 0
max_epochs = {data.epochs}
max_steps = 0  # > 0: stop after this many optimizer steps instead
optim_type = 'AdamW'
lr = {_py(meta["lr"])}
betas = (0.9, 0.999)
weight_decay = 0.0
max_norm = 1.0  # gradient clipping
warmup_ratio = 0.03

# Save
save_steps = 500
save_total_limit = 2  # checkpoints kept (-1: all)

# Evaluate generations during training
evaluation_freq = 500
SYSTEM = {_py(system)}
evaluation_inputs = {_py(inputs)}
seed = 0

# -------------------------------------------------------------------------- PART 2  Model & tokenizer
tokenizer = dict(
    pretrained_model_name_or_path=pretrained_model_name_or_path,
    trust_remote_code=trust_remote_code,
    padding_side='right',
)
model = dict(
    pretrained_model_name_or_path=pretrained_model_name_or_path,
    adapter=model_adapter,
    trust_remote_code=trust_remote_code,
    torch_dtype='auto',  # bf16 where the hardware has it, else fp32
    attn_implementation='auto',  # flash_attention_2 on CUDA with flash-attn, else sdpa
    gradient_checkpointing={not small},
    use_varlen_attn=use_varlen_attn,
    quantization={quant},
)
{method_cfg}

# ------------------------------------------------------------------------------------- PART 3  Data
train_dataset = dict(
    dataset_map=dataset_map,
    data_path=data_path,
    prompt_template=prompt_template,
    max_length=max_length,
    pack_to_max_length=pack_to_max_length,
    use_varlen_attn=use_varlen_attn,
    system=SYSTEM,
{extra_data}    train_on='all_turns',  # 'last_turn': train only the final assistant answer
    shuffle_before_pack=True,
    num_proc=1,
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
)

# ------------------------------------------------------------------------ PART 4  Optimizer & schedule
optim_wrapper = dict(
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm),
    accumulative_counts=accumulative_counts,
    dtype='auto',  # bf16 mixed precision where supported
)
param_scheduler = dict(type='cosine', warmup_ratio=warmup_ratio, eta_min=0.0)
train_cfg = dict(max_epochs=max_epochs, max_steps=max_steps)

# ---------------------------------------------------------------------------------- PART 5  Runtime
checkpoint = dict(interval=save_steps, max_keep_ckpts=save_total_limit)
evaluate_chat = dict(every=evaluation_freq, inputs=evaluation_inputs, system=SYSTEM, max_new_tokens=256)
log_interval = 10
randomness = dict(seed=seed, deterministic=False)
export_hf = True  # write WORK_DIR/hf (adapter or model + tokenizer with its chat template) at the end
'''
    return lines


def generate() -> dict[Path, str]:
    """Every file the generator owns, path -> content (recipes plus index.json)."""
    files: dict[Path, str] = {}
    index: dict[str, dict] = {}
    for model, template, remote, method, data in matrix():
        name = recipe_name(model, method, data)
        rel = Path(model.family) / f"{name}.py"
        if name in index:
            raise SystemExit(f"gen_recipes: the matrix produces {name} twice")
        files[RECIPES / rel] = render(model, template, remote, method, data)
        index[name] = dict(path=str(rel), model=model.key, family=model.family, method=method,
                           dataset=data.name, epochs=data.epochs, template=template, hub_id=model.hub_id,
                           description=f"{METHODS[method]['title']} of {model.title} on {data.name}")
    files[RECIPES / "index.json"] = json.dumps(dict(sorted(index.items())), indent=1, ensure_ascii=False) + "\n"
    return files


def existing() -> set[Path]:
    return {p for p in RECIPES.rglob("*") if p.is_file() and p.name != "__init__.py" and "__pycache__" not in p.parts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed recipes are out of date")
    args = parser.parse_args(argv)
    files = generate()
    stale = sorted(existing() - set(files))
    changed = sorted(p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text)
    n = len(files) - 1
    families = len({p.parent.name for p in files if p.suffix == ".py"})
    if args.check:
        for p in changed:
            print(f"out of date: {p.relative_to(ROOT)}", file=sys.stderr)
        for p in stale:
            print(f"not generated: {p.relative_to(ROOT)}", file=sys.stderr)
        if changed or stale:
            print("Error: recipes differ from the generator; run `python tools/gen_recipes.py`", file=sys.stderr)
            return 1
        print(f"recipes up to date: {n} recipes in {families} families")
        return 0
    for p in stale:
        p.unlink()
    for p in changed:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(files[p], encoding="utf-8")
    print(f"wrote {len(changed)} files, removed {len(stale)}: {n} recipes in {families} families")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
