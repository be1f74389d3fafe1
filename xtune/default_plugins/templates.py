"""Built-in chat templates, registered through the same hook a third-party plugin uses.

Each entry reproduces the reference named in its `reference` field (a file under
shared/reference/chat_templates, or `xtuner:NAME` for a row of XTuner v0.1.23's PROMPT_TEMPLATE table,
used where no official jinja exists). tests/test_templates.py renders every entry against its
reference with transformers' jinja renderer on generated conversations; docs/templates.md explains the
fields. This module holds XTuner's own formats and the community ones; `templates_official` the templates
of models that ship their own jinja.
"""

from xtune.default_plugins.template_parts import CHATML, COMMUNITY, DS_BOS, DS_EOS, STRICT
from xtune.default_plugins.templates_official import OFFICIAL_TEMPLATES
from xtune.default_plugins.templates_vlm import VLM_TEMPLATES
from xtune.hookspecs import hookimpl
from xtune.registry import ChatTemplate

_DEEPSEEK_CODER_SYSTEM = (
    "You are an AI programming assistant, utilizing the DeepSeek Coder model, developed by DeepSeekCompany, "
    "and you only answer questions related to computer science. For politically sensitive questions, "
    "security and privacy issues, and other non-computer science questions, you will refuse to answer. "
    "{content}\n"
)

TEMPLATES = [
    # --- XTuner's own formats (no official jinja): XTuner's encode_fn adds BOS per round and EOS after
    # an answer when the template has no SUFFIX of its own, then the SEP text.
    ChatTemplate(name="default", description="XTuner's neutral format (<|User|>: / <|Bot|>:)", families=(),
                 reference="xtuner:default", bos_token="<s>", eos_token="</s>", round_start="{bos_token}",
                 system="<|System|>:{content}\n", user="<|User|>:{content}\n", generation_prompt="<|Bot|>:",
                 assistant_end="{eos_token}", assistant_suffix="\n", skip_empty_system=True, alternate=True,
                 stop_words=("</s>",)),
    ChatTemplate(name="internlm_chat", description="InternLM (v1) chat", families=("internlm",),
                 reference="xtuner:internlm_chat", bos_token="<s>", eos_token="</s>", bos="{bos_token}",
                 system="<|System|>:{content}\n", user="<|User|>:{content}<eoh>\n",
                 generation_prompt="<|Bot|>:", assistant_end="<eoa>", assistant_suffix="\n",
                 skip_empty_system=True, alternate=True, stop_words=("<eoa>",)),
    ChatTemplate(name="baichuan2_chat", description="Baichuan2 chat (<reserved_106> / <reserved_107>)",
                 families=("baichuan2",), reference="xtuner:baichuan2_chat", bos_token="<s>",
                 eos_token="</s>", round_start="{bos_token}", system="{content}\n",
                 user="<reserved_106>{content}", generation_prompt="<reserved_107>",
                 assistant_end="{eos_token}", assistant_suffix="\n", skip_empty_system=True, alternate=True,
                 stop_words=("</s>",)),
    ChatTemplate(name="deepseek_chat", description="DeepSeek LLM / MoE / V2 chat (User: / Assistant:)",
                 families=("deepseek",), reference="xtuner:deepseek_v2", bos_token=DS_BOS,
                 eos_token=DS_EOS, bos="{bos_token}", system="{content}\n\n", user="User: {content}\n\n",
                 generation_prompt="Assistant: ", assistant_end=DS_EOS, skip_empty_system=True,
                 alternate=True, stop_words=(DS_EOS,)),
    ChatTemplate(name="deepseek_coder",
                 description="DeepSeek-Coder instruct (### Instruction: / ### Response:)",
                 families=("deepseek_coder",), reference="xtuner:deepseek_coder", bos_token=DS_BOS,
                 eos_token="<|EOT|>", round_start="{bos_token}", system=_DEEPSEEK_CODER_SYSTEM,
                 user="### Instruction:\n{content}\n", generation_prompt="### Response:\n",
                 assistant_end="{eos_token}", assistant_suffix="\n", skip_empty_system=True, alternate=True,
                 stop_words=("<|EOT|>",)),
    # --- Community jinja for families without an official template.
    ChatTemplate(name="alpaca", description="Stanford Alpaca (### Instruction: / ### Response:)", families=(),
                 reference=COMMUNITY + "alpaca.jinja", bos_token="<s>", eos_token="</s>", bos="{bos_token}",
                 system="{content}\n\n", later_system="drop", user="### Instruction:\n{content}\n\n",
                 generation_prompt="### Response:\n", assistant_end="{eos_token}", assistant_suffix="\n\n",
                 stop_words=("</s>",), **STRICT),
    ChatTemplate(name="chatml", description="ChatML, strict alternation and trimmed messages", families=(),
                 reference=COMMUNITY + "chatml.jinja", bos="{bos_token}", **CHATML, **STRICT),
    ChatTemplate(name="yi_chat", description="Yi chat (ChatML with Yi's BOS)", families=("yi",),
                 reference=COMMUNITY + "chatml.jinja", bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                 bos="{bos_token}", **CHATML, **STRICT),
    ChatTemplate(name="llama2_chat", description="Llama-2 chat ([INST] <<SYS>> ... [/INST])",
                 families=("llama2",), reference=COMMUNITY + "llama-2-chat.jinja", bos_token="<s>",
                 eos_token="</s>", round_start="{bos_token}", system="<<SYS>>\n{content}\n<</SYS>>\n\n",
                 system_placement="first_user", later_system="drop", user="[INST] {content} [/INST]",
                 assistant=" {content}", assistant_end=" {eos_token}", stop_words=("</s>",), **STRICT),
    ChatTemplate(name="mistral", description="Mistral / Mixtral instruct ([INST] ... [/INST])",
                 families=("mistral", "mixtral"), reference=COMMUNITY + "mistral-instruct.jinja",
                 bos_token="<s>", eos_token="</s>", bos="{bos_token}", system="{content}\n\n",
                 later_system="drop", user="[INST] {content} [/INST]", assistant=" {content}",
                 assistant_end="{eos_token}", stop_words=("</s>",), **STRICT),
    ChatTemplate(name="zephyr", description="Zephyr (<|user|> / <|assistant|>, EOS after every turn)",
                 families=("zephyr",), reference=COMMUNITY + "zephyr.jinja", bos_token="<s>",
                 eos_token="</s>", system="<|system|>\n{content}{eos_token}\n", later_system="same",
                 user="<|user|>\n{content}{eos_token}\n", generation_prompt="<|assistant|>\n",
                 assistant_end="{eos_token}", assistant_suffix="\n", stop_words=("</s>",), **STRICT),
    ChatTemplate(name="vicuna", description="Vicuna v1.1 / v1.5 (USER: / ASSISTANT:)", families=("vicuna",),
                 reference=COMMUNITY + "vicuna.jinja", bos_token="<s>", eos_token="</s>", bos="{bos_token}",
                 system="{content}\n\n", later_system="drop", user="USER: {content}\n",
                 generation_prompt="ASSISTANT:", assistant=" {content}", assistant_end="{eos_token}",
                 assistant_suffix="\n", stop_words=("</s>",), **STRICT),
]


@hookimpl
def register_chat_templates(register):
    for template in TEMPLATES + OFFICIAL_TEMPLATES + VLM_TEMPLATES:
        register(template)
