"""Built-in dataset maps: the record formats xtune reads, and the public data sets XTuner's recipes use.

Formats carry a converter (`xtune.data.formats`); named data sets reuse a format with their hub id
and column names, so adding one is a few lines of data. Column pairs read as
(field the converter expects, column in the data set).
"""

from xtune.default_plugins.datasets_vlm import IMAGE_DATA
from xtune.hookspecs import hookimpl
from xtune.registry import DatasetMap

_FORMATS = "xtune.data.formats"

FORMATS = [
    DatasetMap(name="alpaca", convert=f"{_FORMATS}:alpaca", hub_id="tatsu-lab/alpaca", license="CC BY-NC 4.0",
               description="instruction / input / output, optional system and history"),
    DatasetMap(name="sharegpt", convert=f"{_FORMATS}:sharegpt",
               description="conversations [{from, value}] with human / gpt / system / function_call / "
                           "observation"),
    DatasetMap(name="openai", convert=f"{_FORMATS}:openai",
               description="messages [{role, content}] with optional per-message loss / loss_weight"),
    DatasetMap(name="oasst1", convert=f"{_FORMATS}:oasst1", hub_id="timdettmers/openassistant-guanaco",
               license="Apache-2.0",
               description="'### Human: ... ### Assistant: ...' text (OASST1 top threads)"),
    DatasetMap(name="pretrain", convert=f"{_FORMATS}:pretrain",
               description="plain text ({'text'} records or .txt lines): every token trained"),
    DatasetMap(name="moss_sft", convert=f"{_FORMATS}:moss", hub_id="fnlp/moss-003-sft-data", language="zh",
               license="CC BY-NC 4.0", description="MOSS-003 SFT chats (<|Human|> / <|MOSS|> turns)"),
    DatasetMap(
        name="self_cognition",
        convert=f"{_FORMATS}:self_cognition",
        description="alpaca records whose {{name}} / <NAME> / {{author}} / <AUTHOR> placeholders are "
        "filled from the recipe's self_cognition_name and self_cognition_author",
    ),
]

# Named public data sets: (name, format, hub id, columns, extra fields)
_SQL_SYSTEM = (
    "If you are an expert in SQL, please generate a good SQL Query for Question based on the "
    "CREATE TABLE statement."
)
_COLORIST_SYSTEM = (
    "You are a professional color designer. Please provide the corresponding colors based on "
    "the description of Human."
)
_LAWYER_SYSTEM = "你现在是一名专业的中国律师，请根据用户的问题给出准确、有理有据的回复。"
_MEDICAL_SYSTEM = "如果你是一名医生，请根据患者的描述回答医学问题。"
_ARXIV_SYSTEM = (
    "If you are an expert in writing papers, please generate a good paper title for this paper "
    "based on other authors' descriptions of their abstracts."
)
_CODER_SYSTEM = (
    "You are a professional programer. Please provide the corresponding code based on the description of "
    "Human."
)

DATASETS = [
    DatasetMap(name="alpaca_zh", format="alpaca", hub_id="silk-road/alpaca-data-gpt4-chinese", language="zh",
               columns=(("instruction", "instruction_zh"), ("input", "input_zh"), ("output", "output_zh")),
               description="Alpaca-GPT4 in Chinese"),
            DatasetMap(name="alpaca_enzh", combine=("alpaca", "alpaca_zh"), language="en+zh",
                       description="alpaca and alpaca_zh together"),
            DatasetMap(name="alpaca_enzh_oasst1", combine=("alpaca", "alpaca_zh", "oasst1"), language="en+zh",
                       description="alpaca, alpaca_zh and oasst1 together"),
            DatasetMap(name="code_alpaca", format="alpaca", hub_id="HuggingFaceH4/CodeAlpaca_20K",
                       system=_CODER_SYSTEM, columns=(("instruction", "prompt"), ("output", "completion")),
                       description="CodeAlpaca 20k"),
            DatasetMap(name="medical", format="alpaca", hub_id="shibing624/medical", hub_config="finetune",
                       system=_MEDICAL_SYSTEM, language="zh",
                       description="Chinese medical QA (shibing624/medical)"),
            DatasetMap(name="long_alpaca", format="alpaca", hub_id="Yukang/LongAlpaca-12k",
                       description="LongAlpaca-12k (LongLoRA): questions over whole papers and books, up to "
                                   "~32k tokens; the long-context (sequence parallel) recipes train on it"),
            DatasetMap(name="open_platypus", format="alpaca", hub_id="garage-bAInd/Open-Platypus",
                       description="Open-Platypus STEM / logic instructions"),
            DatasetMap(name="openorca", format="alpaca", hub_id="Open-Orca/OpenOrca",
                       columns=(("system", "system_prompt"), ("instruction", "question"),
                                ("output", "response")), description="OpenOrca GPT-4 / GPT-3.5 completions"),
            DatasetMap(name="sql", format="alpaca", hub_id="b-mc2/sql-create-context", system=_SQL_SYSTEM,
                       columns=(("instruction", "question"), ("input", "context"), ("output", "answer")),
                       description="text-to-SQL with CREATE TABLE context"),
            DatasetMap(name="tiny_codes", format="alpaca", hub_id="nampdn-ai/tiny-codes",
                       system=_CODER_SYSTEM, columns=(("instruction", "prompt"), ("output", "response")),
                       description="tiny-codes"),
            DatasetMap(name="colorist", format="alpaca", hub_id="burkelibbey/colors", system=_COLORIST_SYSTEM,
                       columns=(("instruction", "description"), ("output", "color")),
                       description="colour descriptions to hex codes"),
            DatasetMap(name="lawyer", format="alpaca", hub_id="ShengbinYue/DISC-Law-SFT",
                       data_files="DISC-Law-SFT-Pair-QA-released.jsonl", system=_LAWYER_SYSTEM, language="zh",
                       columns=(("instruction", "input"), ("input", None)),
                       description="DISC-Law-SFT legal QA pairs"),
            DatasetMap(name="arxiv_gentitle", format="alpaca", system=_ARXIV_SYSTEM,
                       columns=(("instruction", "abstract"), ("output", "title")),
                       description="arXiv abstract to title (local JSON export of the Kaggle arXiv metadata)",
                       ),
            DatasetMap(name="wizardlm", format="sharegpt",
                       hub_id="WizardLMTeam/WizardLM_evol_instruct_V2_196k",
                       description="WizardLM evol-instruct V2 (sharegpt)"),
            DatasetMap(name="ultrachat", format="openai", hub_id="HuggingFaceH4/ultrachat_200k",
                       split="train_sft", description="UltraChat 200k multi-turn (messages)")]


# Preference data (docs/preference.md): pairs for DPO / ORPO / SimPO / reward models, unpaired items for KTO.
_PREF = "xtune.data.preference_formats"
PREFERENCE = [
    DatasetMap(name="sharegpt_preference", convert=f"{_PREF}:sharegpt_preference", data="pairs",
               description="LLaMA-Factory ranking sharegpt: conversations + chosen / rejected turns"),
    DatasetMap(name="preference", convert=f"{_PREF}:preference", data="pairs",
               description="TRL preference: prompt / chosen / rejected as text or messages (implicit prompt "
                           "when the sides are whole conversations)"),
    DatasetMap(name="hh_rlhf", convert=f"{_PREF}:hh_rlhf", data="pairs", hub_id="Anthropic/hh-rlhf",
               license="MIT",
               description="HH-RLHF full texts ('Human:' / 'Assistant:') differing in the last answer"),
    DatasetMap(name="medicalgpt_preference", convert=f"{_PREF}:medicalgpt_preference", data="pairs",
               language="zh", description="MedicalGPT question / response_chosen / response_rejected JSONL"),
    DatasetMap(name="alpaca_preference", convert=f"{_PREF}:alpaca_preference", data="pairs",
               description="LLaMA-Factory ranking alpaca (reward-model files): output [chosen, rejected]"),
    DatasetMap(name="kto", convert=f"{_PREF}:kto", data="unpaired",
               description="KTO unpaired: prompt / completion / label, or messages + label (kto_tag)"),
    DatasetMap(name="ultrafeedback", format="preference", hub_id="HuggingFaceH4/ultrafeedback_binarized",
               split="train_prefs", license="MIT", description="UltraFeedback binarized (H4), the DPO set"),
    DatasetMap(name="ultrafeedback_cleaned", format="preference",
               hub_id="argilla/ultrafeedback-binarized-preferences-cleaned", license="MIT",
               description="UltraFeedback binarized and cleaned (Argilla), XTuner's reward-model data"),
    DatasetMap(name="orca_dpo_pairs", format="preference", hub_id="Intel/orca_dpo_pairs",
               license="Apache-2.0", columns=(("prompt", "question"),), description="Orca DPO pairs (Intel)"),
    DatasetMap(name="kto_mix", format="kto", hub_id="trl-lib/kto-mix-14k", license="MIT",
               description="KTO mix 14k (TRL): prompt / completion messages with a label"),
    DatasetMap(name="llamafactory_v1_preference", format="preference",
               columns=(("chosen", "chosen_messages"), ("rejected", "rejected_messages")),
               description="LLaMA-Factory v1 chosen_messages / rejected_messages conversations"),
]

# Prompts for online RL (GRPO, docs/preference.md): a prompt plus the columns its reward functions read.
_PROMPT = "xtune.data.prompt_formats"
PROMPTS = [
    DatasetMap(name="gsm8k", convert=f"{_PROMPT}:gsm8k", data="prompts", hub_id="openai/gsm8k",
               hub_config="main", license="MIT",
               description="GSM8K grade-school math: question; column answer = the text after '####'"),
    DatasetMap(name="gsm8k_alpaca", convert=f"{_PROMPT}:gsm8k_alpaca", data="prompts", license="MIT",
               description="GSM8K as alpaca (AlpacaDataCleaned gsm_8k_train, no '####'): instruction; column "
                           "answer = the last number of output"),
    DatasetMap(name="math", convert=f"{_PROMPT}:math_problem", data="prompts",
               hub_id="DigitalLearningGmbH/MATH-lighteval", license="MIT",
               description="MATH competition problems: problem; column answer = the last \\boxed{} of "
                           "solution (or the record's answer column, as MATH-500 has)"),
    DatasetMap(name="prompt", convert=f"{_PROMPT}:prompt", data="prompts",
               description="prompt-only records: prompt (text or messages), optional system, every other "
                           "column carried for the reward functions"),
]


@hookimpl
def register_dataset_maps(register):
    for entry in FORMATS + DATASETS + IMAGE_DATA + PREFERENCE + PROMPTS:
        register(entry)
