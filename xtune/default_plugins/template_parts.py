"""Pieces several built-in chat templates share: ChatML turns, Llama-3 headers, DeepSeek's special tokens,
and where the reference jinja of each template lives (folders of the shared reference material)."""

COMMUNITY = "community_chujiezheng/chat_templates/"
OFFICIAL = "official_tokenizer_configs/"
LLAMACPP = "official_jinja_llamacpp/"
DS_BOS, DS_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

# ChatML: every turn is <|im_start|>role\n...<|im_end|>\n; the answer is trained through <|im_end|>.
CHATML = dict(system="<|im_start|>system\n{content}<|im_end|>\n", later_system="same",
              user="<|im_start|>user\n{content}<|im_end|>\n", generation_prompt="<|im_start|>assistant\n",
              assistant_end="<|im_end|>", assistant_suffix="\n", stop_words=("<|im_end|>",))

# Llama-3 headers; 3.1 / 3.2 always open with a system header carrying the knowledge and today's dates.
L3_TURN = "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
L3_HEADER = dict(bos="{bos_token}", user=L3_TURN.replace("{role}", "user"),
                 generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
                 assistant_end="<|eot_id|>", trim=True, bos_token="<|begin_of_text|>")
L31 = dict(
    L3_HEADER,
    system="<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: {date_string}\n\n{content}<|eot_id|>",
    default_system="",
    later_system=L3_TURN.replace("{role}", "system"),
    eos_token="<|eot_id|>",
    stop_words=("<|eot_id|>", "<|eom_id|>"),
)

# Community templates (chujiezheng/chat_templates) that trim every message and check alternation.
STRICT = dict(trim=True, alternate=True)
