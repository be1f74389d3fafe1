"""Built-in chat templates of vision-language models whose format no text template already gives.

Each renders byte-identically to the model's own processor `chat_template` once its content lists are
written as text with `<image>` markers (tests/test_vlm_templates.py holds those references). LLaVA-1.5 and
LLaVA-NeXT keep the templates of their language models (vicuna, mistral), as they were trained.
"""

from xtune.default_plugins.template_parts import CHATML
from xtune.registry import ChatTemplate

HUB = "hub:"  # a processor chat_template of a hub model, quoted in tests/test_vlm_templates.py

VLM_TEMPLATES = [
    ChatTemplate(name="qwen2_vl_chat", description="Qwen2-VL / Qwen2.5-VL (ChatML, default system prompt)",
                 families=("qwen2_vl", "qwen2_5_vl"), reference=HUB + "Qwen/Qwen2-VL-7B-Instruct",
                 eos_token="<|im_end|>", default_system="You are a helpful assistant.",
                 **dict(CHATML, stop_words=("<|im_end|>", "<|endoftext|>"))),
    ChatTemplate(name="internvl_chat", description="InternVL3 (ChatML, no default system prompt)",
                 families=("internvl",), reference=HUB + "OpenGVLab/InternVL3-1B-hf", eos_token="<|im_end|>",
                 **CHATML),
    ChatTemplate(name="idefics3", description="Idefics3 / SmolVLM (User: / Assistant: <end_of_utterance>)",
                 families=("idefics3", "smolvlm"), reference=HUB + "HuggingFaceM4/Idefics3-8B-Llama3",
                 bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", bos="{bos_token}",
                 content_lead=" ", system="System:{content}<end_of_utterance>\n", later_system="same",
                 user="User:{content}<end_of_utterance>\n", generation_prompt="Assistant:",
                 assistant_end="<end_of_utterance>", assistant_suffix="\n",
                 stop_words=("<end_of_utterance>",)),
]
