"""Sample chats during training (XTuner's EvaluateChatHook): answers to the recipe's `evaluation_inputs`,
rendered with the recipe's chat template; the training loop asks for them before training, every
`evaluation_freq` optimizer steps, and at the end.

Reading answers is how people notice a broken template or a diverging run early. A failure here is
logged as a warning and never stops training. Generation is greedy, so it draws no random numbers and
leaves a resumed run identical to the uninterrupted one.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("xtune")


class SampleChats:
    """`chats(llm, label)` answers every input greedily and logs the answers (a failure is a warning)."""

    def __init__(self, tokenizer, inputs, *, registry, template=None, system: str = "",
                 max_new_tokens: int = 256):
        self.registry = registry
        self.tokenizer = tokenizer
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        self.template = template
        self.system = system or ""
        self.max_new_tokens = int(max_new_tokens)

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of one user turn plus the generation prompt, in the recipe's template."""
        messages = ([{"role": "system", "content": self.system}] if self.system else [])
        messages.append({"role": "user", "content": text})
        if self.template:
            from xtune.templates import render_prompt

            rendered = render_prompt(self.template, messages, self.tokenizer, registry=self.registry)
            return self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if getattr(self.tokenizer, "chat_template", None):
            out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
        return self.tokenizer(text)["input_ids"]

    def __call__(self, llm, label: str) -> list[str]:
        if not self.inputs:
            return []
        was_training = llm.training
        answers = []
        try:
            llm.eval()
            device = next(llm.parameters()).device
            for text in self.inputs:
                ids = torch.tensor([self.prompt_ids(text)], device=device)
                with torch.no_grad():
                    out = llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=self.max_new_tokens, do_sample=False, use_cache=True,
                                       pad_token_id=self.tokenizer.pad_token_id)
                answer = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
                answers.append(answer)
                log.info(f"sample chat ({label})\nuser: {text}\nassistant: {answer}")
        except Exception as exc:
            log.warning(
                f"sample chat ({label}) failed, training goes on: {type(exc).__name__}: {exc}")
        finally:
            llm.train(was_training)
        return answers
