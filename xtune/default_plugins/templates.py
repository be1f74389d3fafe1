"""Built-in chat templates, registered through the same hook a third-party plugin uses.

Each entry reproduces the reference named in its `reference` field (a file under
shared/reference/chat_templates, or `xtuner:NAME` for a row of XTuner v0.1.23's PROMPT_TEMPLATE table,
used where no official jinja exists). tests/test_templates.py renders every entry against its
reference with transformers' jinja renderer on generated conversations; docs/templates.md explains the fields.
"""

from xtune.hookspecs import hookimpl
from xtune.registry import ChatTemplate

_COMMUNITY = "community_chujiezheng/chat_templates/"
_OFFICIAL = "official_tokenizer_configs/"
_LLAMACPP = "official_jinja_llamacpp/"
_DS_BOS, _DS_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

# ChatML: every turn is <|im_start|>role\n...<|im_end|>\n; the answer is trained through <|im_end|>.
_CHATML = dict(system="<|im_start|>system\n{content}<|im_end|>\n", later_system="same",
               user="<|im_start|>user\n{content}<|im_end|>\n", generation_prompt="<|im_start|>assistant\n",
               assistant_end="<|im_end|>", assistant_suffix="\n", stop_words=("<|im_end|>",))

# Llama-3 headers; 3.1 / 3.2 always open with a system header carrying the knowledge and today's dates.
_L3_TURN = "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
_L3_HEADER = dict(bos="{bos_token}", user=_L3_TURN.replace("{role}", "user"),
                  generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n", assistant_end="<|eot_id|>",
                  trim=True, bos_token="<|begin_of_text|>")
_L31 = dict(_L3_HEADER, system="<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                               "Today Date: {date_string}\n\n{content}<|eot_id|>",
            default_system="", later_system=_L3_TURN.replace("{role}", "system"), eos_token="<|eot_id|>",
            stop_words=("<|eot_id|>", "<|eom_id|>"))

# Community templates (chujiezheng/chat_templates) that trim every message and check alternation.
_STRICT = dict(trim=True, alternate=True)

_DEEPSEEK_CODER_SYSTEM = (
    "You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by DeepSeekCompany, "
    "and you only answer questions related to computer science. For politically sensitive questions, "
    "security and privacy issues, and other non-computer science questions, you will refuse to answer. "
    "{content}\n")

TEMPLATES = [
    # --- XTuner's own formats (no official jinja): XTuner's encode_fn adds BOS per round and EOS after
    # an answer when the template has no SUFFIX of its own, then the SEP text.
    ChatTemplate(name="default", description="XTuner's neutral format (<|User|>: / <|Bot|>:)", families=(),
                 reference="xtuner:default", bos_token="<s>", eos_token="</s>", round_start="{bos_token}",
                 system="<|System|>:{content}\n", user="<|User|>:{content}\n", generation_prompt="<|Bot|>:",
                 assistant_end="{eos_token}", assistant_suffix="\n", skip_empty_system=True, alternate=True, stop_words=("</s>",)),
    ChatTemplate(name="internlm_chat", description="InternLM (v1) chat", families=("internlm",),
                 reference="xtuner:internlm_chat", bos_token="<s>", eos_token="</s>", bos="{bos_token}",
                 system="<|System|>:{content}\n", user="<|User|>:{content}<eoh>\n", generation_prompt="<|Bot|>:",
                 assistant_end="<eoa>", assistant_suffix="\n", skip_empty_system=True, alternate=True, stop_words=("<eoa>",)),
    ChatTemplate(name="baichuan2_chat", description="Baichuan2 chat (<reserved_106> / <reserved_107>)",
                 families=("baichuan2",), reference="xtuner:baichuan2_chat", bos_token="<s>", eos_token="</s>",
                 round_start="{bos_token}", system="{content}\n", user="<reserved_106>{content}",
                 generation_prompt="<reserved_107>", assistant_end="{eos_token}", assistant_suffix="\n",
                 skip_empty_system=True, alternate=True, stop_words=("</s>",)),
    ChatTemplate(name="deepseek_chat", description="DeepSeek LLM / MoE / V2 chat (User: / Assistant:)",
                 families=("deepseek", "deepseek_v2"), reference="xtuner:deepseek_v2", bos_token=_DS_BOS,
                 eos_token=_DS_EOS, bos="{bos_token}", system="{content}\n\n", user="User: {content}\n\n",
                 generation_prompt="Assistant: ", assistant_end=_DS_EOS, skip_empty_system=True, alternate=True, stop_words=(_DS_EOS,)),
    ChatTemplate(name="deepseek_coder", description="DeepSeek-Coder instruct (### Instruction: / ### Response:)",
                 families=("deepseek_coder",), reference="xtuner:deepseek_coder", bos_token=_DS_BOS,
                 eos_token="<|EOT|>", round_start="{bos_token}", system=_DEEPSEEK_CODER_SYSTEM,
                 user="### Instruction:\n{content}\n", generation_prompt="### Response:\n",
                 assistant_end="{eos_token}", assistant_suffix="\n", skip_empty_system=True, alternate=True, stop_words=("<|EOT|>",)),
    # --- Community jinja for families without an official template.
    ChatTemplate(name="alpaca", description="Stanford Alpaca (### Instruction: / ### Response:)", families=(),
                 reference=_COMMUNITY + "alpaca.jinja", bos_token="<s>", eos_token="</s>", bos="{bos_token}",
                 system="{content}\n\n", later_system="drop", user="### Instruction:\n{content}\n\n",
                 generation_prompt="### Response:\n", assistant_end="{eos_token}", assistant_suffix="\n\n",
                 stop_words=("</s>",), **_STRICT),
    ChatTemplate(name="chatml", description="ChatML, strict alternation and trimmed messages", families=(),
                 reference=_COMMUNITY + "chatml.jinja", bos="{bos_token}", **_CHATML, **_STRICT),
    ChatTemplate(name="yi_chat", description="Yi chat (ChatML with Yi's BOS)", families=("yi",),
                 reference=_COMMUNITY + "chatml.jinja", bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                 bos="{bos_token}", **_CHATML, **_STRICT),
    ChatTemplate(name="llama2_chat", description="Llama-2 chat ([INST] <<SYS>> ... [/INST])", families=("llama2",),
                 reference=_COMMUNITY + "llama-2-chat.jinja", bos_token="<s>", eos_token="</s>",
                 round_start="{bos_token}", system="<<SYS>>\n{content}\n<</SYS>>\n\n", system_placement="first_user",
                 later_system="drop", user="[INST] {content} [/INST]", assistant=" {content}",
                 assistant_end=" {eos_token}", stop_words=("</s>",), **_STRICT),
    ChatTemplate(name="mistral", description="Mistral / Mixtral instruct ([INST] ... [/INST])",
                 families=("mistral", "mixtral"), reference=_COMMUNITY + "mistral-instruct.jinja", bos_token="<s>",
                 eos_token="</s>", bos="{bos_token}", system="{content}\n\n", later_system="drop",
                 user="[INST] {content} [/INST]", assistant=" {content}", assistant_end="{eos_token}",
                 stop_words=("</s>",), **_STRICT),
    ChatTemplate(name="zephyr", description="Zephyr (<|user|> / <|assistant|>, EOS after every turn)",
                 families=("zephyr",), reference=_COMMUNITY + "zephyr.jinja", bos_token="<s>", eos_token="</s>",
                 system="<|system|>\n{content}{eos_token}\n", later_system="same", user="<|user|>\n{content}{eos_token}\n",
                 generation_prompt="<|assistant|>\n", assistant_end="{eos_token}", assistant_suffix="\n",
                 stop_words=("</s>",), **_STRICT),
    ChatTemplate(name="vicuna", description="Vicuna v1.1 / v1.5 (USER: / ASSISTANT:)", families=("vicuna",),
                 reference=_COMMUNITY + "vicuna.jinja", bos_token="<s>", eos_token="</s>", bos="{bos_token}",
                 system="{content}\n\n", later_system="drop", user="USER: {content}\n", generation_prompt="ASSISTANT:",
                 assistant=" {content}", assistant_end="{eos_token}", assistant_suffix="\n", stop_words=("</s>",),
                 **_STRICT),
    # --- Official templates (the model's own tokenizer_config.json chat_template).
    ChatTemplate(name="qwen_chat", description="Qwen1.5 / Qwen2 chat (ChatML, default system prompt)",
                 families=("qwen", "qwen1_5", "qwen2"), reference=_OFFICIAL + "qwen1_5/tokenizer_config.json",
                 eos_token="<|im_end|>", default_system="You are a helpful assistant",
                 **dict(_CHATML, stop_words=("<|im_end|>", "<|endoftext|>"))),
    ChatTemplate(name="qwen2_5_chat", description="Qwen2.5 instruct (ChatML, default system prompt)",
                 families=("qwen2_5",), reference=_LLAMACPP + "Qwen-Qwen2.5-7B-Instruct.jinja",
                 eos_token="<|im_end|>",
                 default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                 **dict(_CHATML, stop_words=("<|im_end|>", "<|endoftext|>"))),
    ChatTemplate(name="qwen3_chat", description="Qwen3 (ChatML with <think> blocks; enable_thinking)",
                 families=("qwen3",), reference=_LLAMACPP + "Qwen-Qwen3-0.6B.jinja", eos_token="<|im_end|>",
                 reasoning="qwen3", no_think_prompt="<think>\n\n</think>\n\n",
                 **dict(_CHATML, stop_words=("<|im_end|>", "<|endoftext|>"))),
    ChatTemplate(name="smollm2_chat", description="SmolLM2 instruct (ChatML, default system prompt)",
                 families=("smollm2",), reference="gguf:SmolLM2-135M-Instruct.Q4_1.gguf", bos_token="<|im_start|>", eos_token="<|im_end|>",
                 default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                 **dict(_CHATML, stop_words=("<|im_end|>", "<|endoftext|>"))),
    ChatTemplate(name="internlm2_chat", description="InternLM2 / 2.5 chat (ChatML after <s>)",
                 families=("internlm2", "internlm2_5"), reference=_OFFICIAL + "internlm2/tokenizer_config.json",
                 bos_token="<s>", eos_token="</s>", bos="{bos_token}", **_CHATML),
    ChatTemplate(name="llama3_chat", description="Llama-3 instruct (original template: always ends with the "
                 "assistant header)", families=("llama3",), reference=_OFFICIAL + "llama3/tokenizer_config.json",
                 eos_token="<|end_of_text|>", system=_L3_TURN.replace("{role}", "system"), later_system="same",
                 generation_prompt_always=True, stop_words=("<|eot_id|>", "<|end_of_text|>"), **_L3_HEADER),
    ChatTemplate(name="llama3_1_chat", description="Llama-3.1 instruct (system header with dates)",
                 families=("llama3_1",), reference=_LLAMACPP + "meta-llama-Llama-3.1-8B-Instruct.jinja",
                 date_string="26 Jul 2024", **_L31),
    ChatTemplate(name="llama3_2_chat", description="Llama-3.2 instruct (system header with today's date)",
                 families=("llama3_2",), reference=_LLAMACPP + "meta-llama-Llama-3.2-3B-Instruct.jinja",
                 date_format="%d %b %Y", date_string="26 Jul 2024", **_L31),
    ChatTemplate(name="llama3_3_chat", description="Llama-3.3 instruct (Llama-3.1's template)",
                 families=("llama3_3",), reference=_LLAMACPP + "meta-llama-Llama-3.3-70B-Instruct.jinja",
                 date_string="26 Jul 2024", **_L31),
    ChatTemplate(name="chatglm3", description="ChatGLM3 ([gMASK]sop <|user|> / <|assistant|>)",
                 families=("chatglm3",), reference=_OFFICIAL + "chatglm3/tokenizer_config.json", eos_token="</s>",
                 bos="[gMASK]sop", system="<|system|>\n {content}", later_system="same", user="<|user|>\n {content}",
                 generation_prompt="<|assistant|>", assistant="\n {content}", stop_words=("<|user|>", "<|observation|>")),
    ChatTemplate(name="mistral_nemo", description="Mistral-Nemo instruct (system text in the last [INST])",
                 families=("mistral_nemo",), reference=_OFFICIAL + "mistral_nemo/tokenizer_config.json",
                 bos_token="<s>", eos_token="</s>", bos="{bos_token}", system="{content}\n\n",
                 system_placement="last_user", user="[INST]{content}[/INST]", assistant_end="{eos_token}",
                 alternate=True, stop_words=("</s>",)),
    ChatTemplate(name="gemma", description="Gemma / Gemma-2 instruct (no system role)", families=("gemma", "gemma2"),
                 reference=_LLAMACPP + "google-gemma-2-2b-it.jinja", bos_token="<bos>", eos_token="<eos>",
                 bos="{bos_token}", system_placement="refuse",
                 later_system="<start_of_turn>system\n{content}<end_of_turn>\n",
                 user="<start_of_turn>user\n{content}<end_of_turn>\n", generation_prompt="<start_of_turn>model\n",
                 assistant_end="<end_of_turn>", assistant_suffix="\n", stop_words=("<end_of_turn>", "<eos>"), **_STRICT),
    ChatTemplate(name="phi3_chat", description="Phi-3 / Phi-3.5 instruct (<|user|> / <|assistant|> / <|end|>)",
                 families=("phi3",), reference=_LLAMACPP + "microsoft-Phi-3.5-mini-instruct.jinja", bos_token="<s>",
                 eos_token="<|endoftext|>", system="<|system|>\n{content}<|end|>\n", later_system="same",
                 skip_empty_system=True, user="<|user|>\n{content}<|end|>\n", generation_prompt="<|assistant|>\n",
                 assistant_end="<|end|>", assistant_suffix="\n", conversation_end="{eos_token}",
                 stop_words=("<|end|>", "<|endoftext|>")),
    ChatTemplate(name="deepseek_v3", description="DeepSeek-V3 (<｜User｜> / <｜Assistant｜>)", families=("deepseek_v3",),
                 reference=_OFFICIAL + "deepseek_v3/tokenizer_config.json", bos_token=_DS_BOS, eos_token=_DS_EOS,
                 bos="{bos_token}", system_placement="collect", user="<｜User｜>{content}",
                 generation_prompt="<｜Assistant｜>", assistant_end=_DS_EOS, stop_words=(_DS_EOS,)),
]


@hookimpl
def register_chat_templates(register):
    for template in TEMPLATES:
        register(template)
