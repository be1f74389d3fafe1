"""Sample chats during training (XTuner's EvaluateChatHook): answers to the recipe's `evaluation_inputs`,
rendered with the recipe's chat template, before training, every `every` optimizer steps, and at the end.

Reading answers is how people notice a broken template or a diverging run early. A failure here is
logged as a warning and never stops training. Generation is greedy, so it draws no random numbers and
leaves a resumed run identical to the uninterrupted one.
"""

from __future__ import annotations

import torch
from mmengine.hooks import Hook

from xtune.schedule import Schedule, unwrap_model


class EvaluateChatHook(Hook):
    priority = "LOW"

    def __init__(self, tokenizer, inputs, *, every: int, schedule: Schedule, template=None, registry=None,
                 system: str = "", max_new_tokens: int = 256):
        self.registry = registry
        self.tokenizer = tokenizer
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        self.every = int(every or 0)
        self.schedule = schedule
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

    def chat(self, runner, label: str) -> list[str]:
        if not self.inputs:
            return []
        llm = unwrap_model(runner.model).llm
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
                runner.logger.info(f"sample chat ({label})\nuser: {text}\nassistant: {answer}")
        except Exception as exc:
            runner.logger.warning(
                f"sample chat ({label}) failed, training goes on: {type(exc).__name__}: {exc}")
        finally:
            llm.train(was_training)
        return answers

    def before_train(self, runner) -> None:
        if runner.iter == 0:
            self.chat(runner, "before training")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = self.schedule.step_end(runner.iter + 1)
        if self.every <= 0 or step is None or step == self.schedule.max_steps:
            return  # the last step's answers come from after_train
        if step % self.every == 0:
            self.chat(runner, f"step {step}")

    def after_train(self, runner) -> None:
        self.chat(runner, "after training")
