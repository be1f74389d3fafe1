"""Checking a written GGUF file without trusting the code that wrote it.

transformers has its own GGUF reader (its own name map, its own undoing of llama.cpp's q/k layout, its own
tokenizer builder). Loading our file with it and comparing with the source model shows errors in either
direction: logits on a small prompt set (plain text and the model's chat template), whether the top-1
token agrees at every position, whether both tokenizers give the same ids, and whether the chat template
embedded in the file renders exactly as the source tokenizer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROMPTS = ("The capital of France is", "def fibonacci(n):\n    if n < 2:",
           "Once upon a time, in a land far away,", "1, 2, 3, 4, 5,")
CONVERSATIONS = (
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}],
)


@dataclass
class GGUFCheck:
    max_abs_diff: float  # largest |logit difference| over every position of every prompt
    top1_agreement: float  # share of positions whose most likely next token is the same
    positions: int
    next_token_agreement: float  # share of prompts whose predicted next token (after the prompt) is the same
    same_token_ids: bool  # the file's tokenizer encodes every prompt as the source's does
    same_chat_template: bool | None  # None: the source has no chat template

    def summary(self) -> str:
        template = {None: "no chat template", True: "chat template renders identically",
                    False: "chat template renders DIFFERENTLY"}[self.same_chat_template]
        return (f"check: max |logit diff| {self.max_abs_diff:.3g}, top-1 agreement {self.top1_agreement:.1%} "
                f"over {self.positions} positions, next token after each prompt "
                f"{self.next_token_agreement:.0%} equal, "
                f"token ids {'equal' if self.same_token_ids else 'DIFFER'}, "
                f"{template}")


def render(tokenizer, conversation) -> str | None:
    """A conversation rendered with the tokenizer's chat template; None where the template refuses it (Gemma's
    has no system role)."""
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        return None


def prompt_texts(tokenizer) -> list[str]:
    """The plain prompts, plus the conversations rendered with the tokenizer's chat template."""
    texts = list(PROMPTS)
    if getattr(tokenizer, "chat_template", None):
        texts += [t for t in (render(tokenizer, c) for c in CONVERSATIONS) if t is not None]
    return texts


def compare(source_model, source_tokenizer, gguf_path: str | Path) -> GGUFCheck:
    """Load `gguf_path` with transformers' GGUF reader and compare it with the source (run in float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    loaded.eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    source_model = source_model.float().eval()
    texts = prompt_texts(source_tokenizer)
    same_ids, worst, agree, positions, last = True, 0.0, 0, 0, 0
    for text in texts:
        ids = source_tokenizer(text, add_special_tokens=False)["input_ids"]
        same_ids &= loaded_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
        batch = torch.tensor([ids])
        with torch.no_grad():
            want, got = source_model(input_ids=batch).logits[0], loaded(input_ids=batch).logits[0]
        worst = max(worst, float((want - got).abs().max()))
        equal = want.argmax(-1) == got.argmax(-1)
        agree, positions, last = agree + int(equal.sum()), positions + len(ids), last + int(equal[-1])
    same_template = None
    if getattr(source_tokenizer, "chat_template", None):
        same_template = all(render(loaded_tokenizer, c) == render(source_tokenizer, c) for c in CONVERSATIONS)
    return GGUFCheck(worst, agree / max(positions, 1), positions, last / len(texts), same_ids, same_template)


def check_gguf(model: str, gguf_path: str | Path, *, registry, adapter: str | None = None,
               dtype: str = "auto", source: str = "auto") -> GGUFCheck:
    """`xtune convert hf_to_gguf --check`: the source loaded as the conversion loaded it, compared."""
    from xtune.export.hf_to_gguf import load_source

    llm, tokenizer, _ = load_source(model, adapter, dtype, source, registry=registry)
    return compare(llm, tokenizer, gguf_path)
