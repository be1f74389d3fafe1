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

import gen_recipes_vlm  # the vision-language part of the matrix (tools/gen_recipes_vlm.py)

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


@dataclass(frozen=True)
class Data:
    name: str  # dataset map name; its hub id (or mixture) is where the data comes from
    epochs: int
    data_path: str | None = None  # a local path the user provides, where the map has no public source
    note: str = ""
    sequence_parallel: int = 1  # > 1: a long-context recipe (32k tokens, rows cut over this many processes)


def builtin_registry():
    """xtune's built-in entries only: the catalogue the recipes are generated from (plugins bring their
    own)."""
    from xtune.plugins import PluginSystem

    system = PluginSystem()
    system.load_defaults()
    return system.registry


REGISTRY = builtin_registry()


# -------------------------------------------------------------------------------------------- data
_ZH_EN_INPUTS = ["请给我介绍五个上海的景点", "Please tell me five scenic spots in Shanghai"]
DATASETS = {d.name: d
            for d in [Data("alpaca", 3), Data("alpaca_zh", 3),
                      Data("alpaca_enzh", 3, note="alpaca + alpaca_zh from the hub"),
                      Data("alpaca_enzh_oasst1", 3, note="alpaca + alpaca_zh + oasst1 from the hub"),
                      Data("oasst1", 3), Data("code_alpaca", 3), Data("medical", 1), Data("open_platypus", 3),
                      Data("openorca", 1), Data("sql", 3), Data("tiny_codes", 1), Data("colorist", 5),
                      Data("lawyer", 3),
                      Data("arxiv_gentitle", 3, "./data/arxiv_data.json",
                           note="download the arXiv metadata from Kaggle (Cornell-University/arxiv) and "
                                "export it to JSON"),
                      Data("moss_sft", 1), Data("wizardlm", 1),
                      Data("self_cognition", 3, note="xtune's own self-cognition set; or your alpaca file")]}
EVALUATION_INPUTS = {
    "gsm8k": ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
              "May. How many clips did Natalia sell altogether in April and May?"],
    "sql": [
        "CREATE TABLE station (name VARCHAR, lat VARCHAR, city VARCHAR)\nFind the name, latitude, and city "
        "of stations with latitude above 50.",
        "CREATE TABLE weather (zip_code VARCHAR, mean_visibility_miles "
        "INTEGER)\n找到mean_visibility_miles最大的zip_code。",
    ],
    "colorist": ["请给我一个像天空一样清澈透明的蓝色。", "Please give me a clear blue like the sky."],
    "code_alpaca": ["写一个Python函数，将十进制数转换为二进制数。",
                    "Write a Python function that reverses a string."],
    "tiny_codes": ["写一个Python函数，将十进制数转换为二进制数。",
                   "Write a Python function that reverses a string."],
    "medical": ["我有家族遗传性的过敏，请问可以可以献血吗？", "我爷爷有高血压，请问他可以喝咖啡吗？"],
    "lawyer": ["请问离婚需要准备什么材料？", "销售鳄鱼皮包违法吗？"],
    "arxiv_gentitle": [
        "We present a method to fine-tune large language models with 4-bit quantised weights and "
        "low-rank adapters, reducing memory use enough to train a 65B model on one GPU."
    ],
    "self_cognition": ["你是谁？", "Who are you?", "Who made you?"],
}

# ------------------------------------------------------------------------------------------ matrix
METHODS = {"full": dict(lr=2e-5, title="full fine-tuning"), "lora": dict(lr=2e-4, title="LoRA"),
           "qlora": dict(lr=2e-4, title="QLoRA (4-bit NF4 base)")}
# Low-memory methods (issue 28): every weight trains without AdamW's full states (LOMO, AdaLomo, GaLore,
# APOLLO, BAdam, LISA), or LoRA starts closer to the full fine-tune (PiSSA; LoftQ for QLoRA). `method` and
# `init` name the registry's method and LoRA's `init` where the recipe name says more than the method.
LOW_MEMORY = {"lomo": dict(lr=1e-2, title="LOMO (SGD fused into backward: no gradients or optimizer states)"),
              "adalomo": dict(lr=5e-4, title="AdaLomo (LOMO with factored second moments)"),
              "galore": dict(lr=2e-5, title="GaLore (AdamW moments in a low-rank gradient projection)"),
              "apollo": dict(lr=2e-5, title="APOLLO (channel-wise learning rates from a random projection)"),
              "badam": dict(lr=1e-5, title="BAdam (AdamW on one decoder layer at a time)"),
              "lisa": dict(lr=2e-5, title="LISA (embeddings, head and two sampled layers at a time)"),
              # PiSSA's adapters start as each weight's principal part, so a step moves the model as a full
              # fine-tuning step does: full tuning's rate (the PiSSA paper trains both at 2e-5)
              "lora_pissa": dict(lr=2e-5, title="LoRA from PiSSA (principal singular components)",
                                 method="lora", init="pissa"),
              "qlora_loftq": dict(lr=2e-4, title="QLoRA from LoftQ (adapters fitted to the 4-bit error)",
                                  method="qlora", init="loftq")}
LOW_MEMORY_DATASETS = ["alpaca", "alpaca_zh"]
METHODS.update(LOW_MEMORY)
STANDARD = {"qlora": ["alpaca", "alpaca_zh", "alpaca_enzh", "oasst1", "code_alpaca"],
            "lora": ["alpaca", "oasst1", "self_cognition"]}
FULL_DATASETS = ["alpaca", "oasst1"]  # for models small enough to train in full (<= 8B)
# Flagship models get QLoRA recipes on every public data set, as XTuner ships them.
FLAGSHIPS = ["internlm_7b", "internlm_chat_7b", "internlm2_chat_7b", "internlm2_5_chat_7b", "llama2_7b",
             "llama3_8b_instruct", "qwen1_5_7b_chat", "qwen2_5_7b_instruct", "chatglm3_6b",
             "baichuan2_7b_chat"]


# Long context as XTuner's sequence-parallel recipes: 32k-token packed rows cut over 4 processes, for chat
# models trained to 32k positions whose attention and key-value heads divide by 4.
LONG_DATA = Data("long_alpaca", 1, sequence_parallel=4,
                 note="LongAlpaca-12k: questions over whole papers and books, up to ~32k tokens")
LONG_CONTEXT = ["internlm2_chat_7b", "internlm2_5_chat_7b", "qwen2_5_7b_instruct"]
LONG_MAX_LENGTH = 32768


def builtin_language_models():
    """The registry's built-in language models (vision-language ones get tools/gen_recipes_vlm.py's)."""
    return [model for model in REGISTRY.models if model.plugin == "xtune"
            and REGISTRY.model_adapters.get(model.family).model_kind == "llm"]


def matrix():
    """Yield (model, method, data) for every text recipe: each built-in language model of the registry
    (vision-language recipes come from tools/gen_recipes_vlm.py)."""
    for model in builtin_language_models():
        plan = {m: list(ds) for m, ds in STANDARD.items()}
        if model.name in FLAGSHIPS:
            plan["qlora"] = [d for d in DATASETS if d != "self_cognition"] + ["self_cognition"]
        if model.params_b <= 8:
            plan["full"] = FULL_DATASETS
        for method, names in plan.items():
            for name in names:
                yield model, method, DATASETS[name]
        if model.name in LONG_CONTEXT:
            yield model, "qlora", LONG_DATA
        if model.chat and model.params_b <= 8 and not model.num_experts and not model.unsupported:
            for method in LOW_MEMORY:
                for name in LOW_MEMORY_DATASETS:
                    yield model, method, DATASETS[name]


def registry_method(key: str) -> str:
    """The tuning method a recipe key trains with ('lora_pissa' -> 'lora')."""
    return METHODS.get(key, {}).get("method", key)


# ------------------------------------------------------------------------------- preference matrix
# Objectives (registry names, docs/preference.md) with their learning rates per method and a title.
OBJECTIVES = {"dpo": dict(lr={"full": 5e-7, "lora": 5e-6, "qlora": 5e-6}, title="DPO"),
              "orpo": dict(lr={"full": 8e-6, "lora": 8e-6, "qlora": 8e-6}, title="ORPO"),
              "simpo": dict(lr={"full": 1e-6, "lora": 1e-5, "qlora": 1e-5}, title="SimPO"),
              "kto": dict(lr={"full": 5e-7, "lora": 5e-6, "qlora": 5e-6}, title="KTO"),
              "reward": dict(lr={"full": 1e-5, "lora": 1e-4, "qlora": 1e-4}, title="a reward model"),
              "ppo": dict(lr={"full": 1e-6, "lora": 1e-5, "qlora": 1e-5}, title="PPO (RLHF)"),
              "grpo": dict(lr={"full": 1e-6, "lora": 1e-5, "qlora": 1e-5},
                           title="GRPO (RL, verifiable rewards)")}
PREFERENCE_DATA = {d.name: d for d in [Data("ultrafeedback", 1), Data("ultrafeedback_cleaned", 1),
                                       Data("hh_rlhf", 1), Data("orca_dpo_pairs", 1), Data("kto_mix", 1),
                                       Data("gsm8k", 1, note="the hub's openai/gsm8k (main): its '#### 72' is"
                                                             " the answer math_verify checks")]}
# Online RL (objectives that generate in the loop: PPO, GRPO) trains in one process, on prompts.
ONLINE = ("ppo", "grpo")
# Every chat model: DPO and a reward model on QLoRA, ORPO on LoRA; flagships, the smallest model and the
# GRPO models of issue 23 more.
PREFERENCE_STANDARD = [("qlora", "dpo", "ultrafeedback"), ("lora", "orpo", "ultrafeedback"),
                       ("qlora", "reward", "ultrafeedback")]
PREFERENCE_FLAGSHIP = [("qlora", "dpo", "hh_rlhf"), ("qlora", "dpo", "orca_dpo_pairs"),
                       ("qlora", "simpo", "ultrafeedback"), ("qlora", "kto", "kto_mix"),
                       ("qlora", "reward", "ultrafeedback_cleaned"), ("qlora", "ppo", "ultrafeedback"),
                       ("qlora", "grpo", "gsm8k")]
PREFERENCE_EXTRA = {"smollm2_135m_instruct": [
    ("lora", "dpo", "ultrafeedback"), ("full", "dpo", "ultrafeedback"), ("lora", "simpo", "ultrafeedback"),
    ("lora", "kto", "kto_mix"), ("lora", "reward", "ultrafeedback"), ("lora", "ppo", "ultrafeedback"),
    ("lora", "dpo", "hh_rlhf"), ("lora", "grpo", "gsm8k")],
    # GRPO beyond the flagships' QLoRA: a LoRA 7B and Qwen3, whose chat template thinks (issue 23)
    "qwen2_5_7b_instruct": [("lora", "grpo", "gsm8k")], "qwen3_8b": [("qlora", "grpo", "gsm8k")]}

# GRPO's recipes: the system prompt that asks for the format the `format` reward checks, and the settings
# that differ from the objective's registered defaults (DAPO's clip-higher; two rewards; no reference).
GRPO_SYSTEM = ("A conversation between a user and an assistant. The user asks a math question and the "
               "assistant solves it. The assistant first thinks about the reasoning process and then gives "
               "the final answer: the reasoning inside <think> </think> and the answer, a number only, "
               "inside <answer> </answer>, i.e. <think> reasoning here </think><answer> 72 </answer>.")
GRPO_SETTINGS = {"reward_funcs": ["format", "math_verify"], "epsilon_high": 0.28}
GRPO_COMMENTS = {"reward_funcs": "  # registered names, dict(type=..., **settings), 'pkg.mod:fn'",
                 "reward_weights": "  # None: 1.0 each",
                 "num_generations": "  # completions per prompt (a group: advantages are relative within it)",
                 "max_completion_length": "  # tokens a completion may have",
                 "beta": "  # > 0: a KL term to the reference (the adapters-off model)",
                 "epsilon_high": "  # DAPO's clip-higher (None: epsilon)",
                 "num_iterations": "  # updates per generation batch (> 1: importance ratios)",
                 "loss_type": "  # 'grpo', 'bnpo', 'dr_grpo' or 'dapo' (TRL's definitions)",
                 "scale_rewards": "  # 'group', 'batch' or 'none'",
                 "mask_truncated_completions": "  # True: no loss on completions cut at the length",
                 "reference": "  # used only when beta > 0"}
GRPO_SMALL = {"smollm2_135m_instruct": dict(num_generations=4)}  # a group per step that 2 CPU cores sample


OVERRIDE_EXAMPLES = {"dpo": "objective.beta=0.2 dataset_map=sharegpt_preference data_path=./my_pairs.json",
                     "kto": "objective.beta=0.2 dataset_map=kto data_path=./my_kto.json",
                     "reward": "lr=5e-5 dataset_map=sharegpt_preference data_path=./my_pairs.json",
                     "ppo": "objective.kl_coef=0.1 objective.reward_model=./my_reward_model",
                     "grpo": "dataset_map=gsm8k_alpaca data_path=./gururise_gsm_8k_train_alpaca_format.json "
                             "objective.beta=0.04"}


def preference_matrix():
    """Yield (model, method, objective, data) for every preference recipe: the built-in chat language models
    (preference objectives train text models)."""
    for model in builtin_language_models():
        if not model.chat:
            continue
        plan = list(PREFERENCE_STANDARD)
        if model.name in FLAGSHIPS:
            plan += PREFERENCE_FLAGSHIP
        plan += PREFERENCE_EXTRA.get(model.name, [])
        for method, objective, name in plan:
            yield model, method, objective, PREFERENCE_DATA[name]


def recipe_name(model, method: str, data: Data, objective: str | None = None) -> str:
    middle = f"{method}_{objective}" if objective else method
    sp = f"_sp{data.sequence_parallel}" if data.sequence_parallel > 1 else ""
    return f"{model.name}_{middle}_{data.name}{sp}_e{data.epochs}"


def objective_lines(objective: str | None, model, method: str) -> str:
    """`objective = dict(...)` with the objective's registered defaults written out ('' for SFT)."""
    if objective is None:
        return ""
    defaults = dict(REGISTRY.objectives.get(objective).defaults)
    if objective == "ppo":
        defaults["reward_model"] = f"./work_dirs/{model.name}_{method}_reward_ultrafeedback_e1/hf"
    if objective == "grpo":
        defaults.update(GRPO_SETTINGS, **GRPO_SMALL.get(model.name, {}))
    comments = {"loss_type": "  # 'sigmoid', 'ipo' or 'hinge'",
                "reference": "  # 'auto': the model with adapters off (peft), else a frozen copy",
                "precompute_ref_log_probs": "  # True: reference log-probs computed once before training",
                "reward_model": "  # train the reward recipe first: its WORK_DIR/hf",
                "nll_on_prompt": "  # True: the NLL covers the prompt too, as TRL computes it"}
    if objective == "grpo":
        comments = GRPO_COMMENTS
    body = "".join(f"    {k}={_py(v)},{comments.get(k, '')}\n" for k, v in defaults.items())
    return f"\nobjective = dict(\n    type={_py(objective)},\n{body})\n"


def data_source(data: Data) -> str | None:
    """The recipe's data_path: the user's local file, else the dataset map's hub id (None: a mixture or
    xtune's own self-cognition set, which the map resolves itself)."""
    return data.data_path or REGISTRY.dataset_maps.get(data.name).hub_id


def method_lines(method: str, model=None, init: str | None = None) -> str:
    """`method_cfg = dict(...)` with the tuning method's registered defaults written out. A mixture of
    experts gets no LoRA dropout: peft adapts transformers 5's fused experts through a wrapper without it."""
    defaults = dict(REGISTRY.tuning_methods.get(method).defaults)
    if init:
        defaults["init"] = init
    if not defaults:
        return "method_cfg = dict(type=method)"
    comments = {"target_modules": "  # the model adapter's choice ('all-linear' by default)",
                "init": "  # default, gaussian, pissa, pissa_niter_N, olora; loftq with qlora",
                "clip_grad_norm": "  # its own clipping: a second backward pass measures the norm",
                "switch_interval": "  # optimizer steps per block", "step_interval": "  # steps per draw",
                "activated_layers": "  # decoder layers drawn to train at a time"}
    if model is not None and model.num_experts and "lora_dropout" in defaults:
        defaults["lora_dropout"] = 0.0
        comments["lora_dropout"] = "  # experts (fused 3-D tensors) take LoRA without dropout"
    body = "".join(f"    {k}={_py(v)},{comments.get(k, '')}\n" for k, v in defaults.items())
    return f"method_cfg = dict(\n    type=method,\n{body})"


def quantization_lines(method: str) -> str:
    """The `quantization=` value: the method's registered bitsandbytes settings, or None."""
    quant = dict(REGISTRY.tuning_methods.get(method).quantization)
    if not quant:
        return "None"
    items = [f"{k}={_py(v)}" for k, v in quant.items()]
    first, rest = ", ".join(items[:3]), ", ".join(items[3:])
    return f"dict({first},\n                      {rest})" if rest else f"dict({first})"


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


# Optimizer, schedule and runtime: the same in every recipe.
RUNTIME = """\
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
"""


RULE = "# " + "=" * 101


def native_architecture(adapter) -> str:
    """The native transformers architecture this family's hub-code checkpoints load as ('' for none)."""
    targets = [REGISTRY.checkpoint_conversions.get(n).target for n in adapter.conversions]
    names = {"llama": "Llama", "glm": "Glm"}
    return "/".join(dict.fromkeys(names.get(t, t) for t in targets if t))


def render(model, method: str, data: Data, objective: str | None = None) -> str:
    name = recipe_name(model, method, data, objective)
    meta = METHODS[method]
    entry = REGISTRY.tuning_methods.get(registry_method(method))
    limits = dict(entry.limits)
    adapter = REGISTRY.model_adapters.get(model.family)
    template, remote = adapter.default_template, adapter.trust_remote_code
    small = model.params_b <= 2
    ppo = objective in ONLINE  # PPO and GRPO: prompts, generated in the loop, in one process
    batch_size = {"ppo": 8, "grpo": 4}.get(objective, 1)  # GRPO: 4 prompts x num_generations completions
    accumulative_counts = 1 if ppo or entry.fused_update else 16
    if entry.fused_update:  # no accumulation: the batch itself is larger
        batch_size = 4
    max_length = {"ppo": 1024, "grpo": 512}.get(objective) or (LONG_MAX_LENGTH if data.sequence_parallel > 1
                                                                else 2048)
    title = meta["title"] if objective is None else f"{OBJECTIVES[objective]['title']} with {meta['title']}"
    lr = meta["lr"] if objective is None else OBJECTIVES[objective]["lr"][method]
    pack = ("False  # prompts, answered in left-padded batches" if ppo else "True  # rows of whole pairs, "
            "2 x max_length tokens; no attention across sequences") if objective else \
        "True  # rows of several samples; each attends only to itself (varlen FA2 on CUDA)"
    deepspeed = "zero3" if method == "full" and model.params_b > 2 else "zero2"
    source = data_source(data)
    downloads = f"the model {model.hub_id}"
    if source and not source.startswith("."):
        downloads += f" and the data set {source}"
    elif source is None and data.name != "self_cognition":
        downloads += " and the data sets of the mixture"
    data_path = _py(source) if source else "None"
    data_comment = f"  # {data.note}" if data.note else ""
    system = GRPO_SYSTEM if objective == "grpo" else ""
    length_comment = "  # of a prompt (longer ones are dropped); completions: max_completion_length" \
        if objective == "grpo" else ""
    inputs = [] if objective == "reward" else EVALUATION_INPUTS.get(data.name, _ZH_EN_INPUTS)
    remote_comment = "  # this family's modelling code comes from the hub" if remote else ""
    native = native_architecture(adapter)
    if native and not remote:
        remote_comment = (f"  # hub-code layout, loaded natively as {native}; True runs the hub's own "
                          "code (transformers 4.x)")
    unsupported = f"#\n# NOT SUPPORTED: {model.unsupported}.\n" if model.unsupported else ""
    train_flags = f"  # one process: {objective.upper()} generates, scores and updates in turn" if ppo \
        else f" --deepspeed {deepspeed}"
    # a long-context recipe runs two sequence-parallel groups: data parallel over them
    launch = f"NPROC_PER_NODE={2 * data.sequence_parallel} " if data.sequence_parallel > 1 else ""
    example = "lr=1e-4 max_length=1024 data_path=./my_data.jsonl" if objective is None else \
        OVERRIDE_EXAMPLES.get(objective, OVERRIDE_EXAMPLES["dpo"])
    quant = quantization_lines(entry.name)
    method_cfg = method_lines(entry.name, model, meta.get("init"))
    if "processes" in limits:  # LOMO, BAdam, LISA: docs/training.md says why
        train_flags = f"  # one process, no DeepSpeed: {entry.name} trains that way (docs/training.md)"
    elif "deepspeed" in limits:  # GaLore, APOLLO
        train_flags = f"  # no DeepSpeed: {entry.name} projects 2-D gradients (NPROC_PER_NODE=N for DDP)"
    max_norm = "None  # no ordinary clipping (see method_cfg.clip_grad_norm)" if "clip_grad" in limits else \
        "1.0  # gradient clipping"
    extra_settings = extra_data = ""
    if data.name == "self_cognition":
        extra_data = ("    self_cognition_name=self_cognition_name,\n"
                      "    self_cognition_author=self_cognition_author,\n")
        extra_settings = (
            "\n# Self-cognition: who the model says it is\n"
            "self_cognition_name = 'xtune assistant'\nself_cognition_author = 'the xtune team'\n"
        )
    if data.sequence_parallel > 1:
        extra_settings += (
            "\n# Long context: each packed row is cut along the sequence over this many\n"
            "# processes (NPROC_PER_NODE x NNODES must be a multiple of it; docs/training.md)\n"
            f"sequence_parallel_size = {data.sequence_parallel}\n")
    lines = f"""\
# =====================================================================================================
# {name}
# {title} of {model.title} on {data.name}, {data.epochs} epoch{"s" if data.epochs > 1 else ""}.
#
#   {launch}xtune train {name}{train_flags}
#   xtune train {name} --cfg-options {example}
#
# Downloads {downloads} (Hugging Face hub; a ModelScope id or a local path works as well).
# Generated by tools/gen_recipes.py: to change it, `xtune copy-cfg {name} .` and edit the copy.
{unsupported}{RULE}

# ----------------------------------------------------------------------------------- PART 1  Settings
# Model
pretrained_model_name_or_path = {_py(model.hub_id)}
model_adapter = {_py(model.family)}
trust_remote_code = {remote}{remote_comment}
method = {_py(entry.name)}

# Data
dataset_map = {_py(data.name)}
data_path = {data_path}{data_comment}
prompt_template = {_py(template)}
max_length = {max_length}{length_comment}
pack_to_max_length = {pack}
{extra_settings}
# Scheduler & optimizer
batch_size = {batch_size}  # per device
accumulative_counts = {accumulative_counts}
dataloader_num_workers = 0
max_epochs = {data.epochs}
max_steps = 0  # > 0: stop after this many optimizer steps instead
optim_type = 'AdamW'
lr = {_py(lr)}
betas = (0.9, 0.999)
weight_decay = 0.0
max_norm = {max_norm}
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
    quantization={quant},
)
{method_cfg}
{objective_lines(objective, model, method)}
# ------------------------------------------------------------------------------------- PART 3  Data
train_dataset = dict(
    dataset_map=dataset_map,
    data_path=data_path,
    prompt_template=prompt_template,
    max_length=max_length,
    pack_to_max_length=pack_to_max_length,
    system=SYSTEM,
{extra_data}    train_on='all_turns',  # 'last_turn': train only the final assistant answer
    shuffle_before_pack=True,
    num_proc=1,
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=dataloader_num_workers,
)

"""
    return lines + RUNTIME


def generate() -> dict[Path, str]:
    """Every file the generator owns, path -> content (recipes plus index.json)."""
    files: dict[Path, str] = {}
    index: dict[str, dict] = {}
    plans = [(m, method, None, d) for m, method, d in matrix()] + list(preference_matrix())
    for model, method, objective, data in plans:
        name = recipe_name(model, method, data, objective)
        rel = Path(model.family) / f"{name}.py"
        if name in index:
            raise SystemExit(f"gen_recipes: the matrix produces {name} twice")
        files[RECIPES / rel] = render(model, method, data, objective)
        template = REGISTRY.model_adapters.get(model.family).default_template
        title = METHODS[method]["title"] if objective is None else \
            f"{OBJECTIVES[objective]['title']} with {METHODS[method]['title']}"
        index[name] = dict(path=str(rel), model=model.name, family=model.family,
                           method=registry_method(method),
                           dataset=data.name, epochs=data.epochs, template=template, hub_id=model.hub_id,
                           description=f"{title} of {model.title} on {data.name}")
        if data.sequence_parallel > 1:
            index[name]["sequence_parallel"] = data.sequence_parallel
        if objective:
            index[name]["objective"] = objective
        if model.unsupported:
            index[name]["unsupported"] = model.unsupported
    vlm_files, vlm_index = gen_recipes_vlm.generate(REGISTRY, RECIPES, _py, method_lines, quantization_lines,
                                                   RUNTIME)
    twice = sorted(set(index) & set(vlm_index))
    if twice:
        raise SystemExit(f"gen_recipes: the matrix produces {twice[0]} twice")
    files.update(vlm_files)
    index.update(vlm_index)
    files[RECIPES / "index.json"] = (json.dumps(dict(sorted(index.items())), indent=1, ensure_ascii=False)
                                     + "\n")
    return files


def existing() -> set[Path]:
    return {p for p in RECIPES.rglob("*") if p.is_file() and p.name != "__init__.py"
            and "__pycache__" not in p.parts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed recipes are out of date")
    args = parser.parse_args(argv)
    files = generate()
    stale = sorted(existing() - set(files))
    changed = sorted(p for p,
                     text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text)
    n = len(files) - 1
    families = len({p.parent.name for p in files if p.suffix == ".py"})
    if args.check:
        for p in changed:
            print(f"out of date: {p.relative_to(ROOT)}", file=sys.stderr)
        for p in stale:
            print(f"not generated: {p.relative_to(ROOT)}", file=sys.stderr)
        if changed or stale:
            print("Error: recipes differ from the generator; run `python tools/gen_recipes.py`",
                  file=sys.stderr)
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
