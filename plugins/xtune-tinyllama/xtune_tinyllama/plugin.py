"""The plugin module named by the `xtune` entry point. Each hook registers plain data entries."""

from pathlib import Path

from xtune.hookspecs import hookimpl
from xtune.recipe_files import recipes_in_dir
from xtune.registry import ChatTemplate, DatasetMap, ModelAdapter, RewardFunction


@hookimpl
def register_model_adapters(register):
    register(ModelAdapter(name="tinyllama", model_types=("llama",), default_template="tinyllama_chat",
                          description="TinyLlama-1.1B (Llama-2 architecture and tokenizer)"))


@hookimpl
def register_chat_templates(register):
    register(ChatTemplate(
        name="tinyllama_chat", families=("tinyllama",), stop_words=("</s>",),
        bos_token="<s>", eos_token="</s>", later_system="same",
        system="<|system|>\n{content}{eos_token}\n", user="<|user|>\n{content}{eos_token}\n",
        generation_prompt="<|assistant|>\n", assistant="{content}", assistant_end="{eos_token}",
                          assistant_suffix="\n",
        description="TinyLlama-1.1B-Chat (Zephyr-style turns)",
    ))


@hookimpl
def register_dataset_maps(register):
    register(DatasetMap(
        name="dolly", format="alpaca", hub_id="databricks/databricks-dolly-15k", license="CC BY-SA 3.0",
        columns=(("instruction", "instruction"), ("input", "context"), ("output", "response")),
        description="Databricks Dolly 15k human-written instructions",
    ))


@hookimpl
def register_reward_functions(register):
    register(RewardFunction(
        name="ngram_repetition", function="xtune_tinyllama.rewards:ngram_repetition",
        description="penalty for repeated word n-grams (settings ngram_size, max_penalty)",
    ))


@hookimpl
def register_recipes(register):
    for recipe in recipes_in_dir(Path(__file__).parent / "recipes"):
        register(recipe)
