"""A conversation with a loaded model: history, prompt rendering, generation that streams and stops.

The prompt format comes from, in order: `--prompt-template NAME` (an xtune template), the model's own
`chat_template` (folders from `xtune convert` carry the recipe's template as jinja, and it is recognised
so that its stop words apply), or the model adapter's default template. Generation stops at the EOS
token(s) and at the template's stop words; single-token stop words stop `generate` itself, longer ones
are cut from the streamed text and end generation at the next token.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from xtune.chat.stops import StopFilter, cut_at_stop
from xtune.templates.stops import stop_token_ids, stop_words


@dataclass
class GenerationSettings:
    max_new_tokens: int = 512
    temperature: float = 0.7  # 0: greedy
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.0
    seed: int | None = None


def sampling_kwargs(s: GenerationSettings, *, eos_token_id, pad_token_id) -> dict:
    """`generate`'s keyword arguments for settings `s`: greedy at temperature 0, else sampling."""
    kwargs = dict(max_new_tokens=s.max_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                  repetition_penalty=s.repetition_penalty)
    if s.temperature and s.temperature > 0:
        kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def seeded(seed: int | None):
    """With a seed, torch's random state for one answer: seeded, then put back, so an answer never
    changes the random numbers of the process around it (`transformers.set_seed` would, for good)."""
    if seed is None:
        return contextlib.nullcontext()
    import torch

    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=range(torch.cuda.device_count())))
    torch.manual_seed(seed)
    return stack


class ChatSession:
    """Multi-turn chat. `ask(text)` returns the answer and keeps it in the history; `reset()` forgets.
    `registry` (the CLI's, or a caller's own) supplies the templates and the model adapters' defaults."""

    def __init__(self, model, tokenizer, *, registry, template: str | None = None,
                 system: str | None = None,
                 settings: GenerationSettings | None = None, model_name: str = ""):
        from xtune.templates.export import find_template_name

        self.model, self.tokenizer = model, tokenizer
        self.registry = registry
        self.system = system
        self.settings = settings or GenerationSettings()
        self.history: list[dict] = []
        self.use_tokenizer_template = template is None and bool(getattr(tokenizer, "chat_template", None))
        if self.use_tokenizer_template:
            self.template = find_template_name(tokenizer.chat_template, registry=registry)
        else:
            if template is None:
                from xtune.chat.loading import default_template_name

                template = default_template_name(model, model_name, registry) or "default"
            from xtune.templates import get_template

            get_template(template, registry)  # unknown names fail here, with the closest ones
            self.template = template
        self.set_stops()

    def set_stops(self) -> None:
        """Where answers stop, from the template chosen (again when a subclass picks it later)."""
        self.stop_words = stop_words(self.template, self.tokenizer, registry=self.registry)
        self.eos_token_ids = stop_token_ids(self.stop_words, self.tokenizer, self.model)

    # ------------------------------------------------------------------ prompt
    def messages(self, text: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return head + self.history + [{"role": "user", "content": text}]

    def render(self, messages: list[dict]) -> str:
        if self.use_tokenizer_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        from xtune.templates import render_prompt

        # The tokenizer's own BOS/EOS text, exactly as the data pipeline rendered the training data.
        return render_prompt(self.template, messages, self.tokenizer, registry=self.registry)

    # ------------------------------------------------------------------ generation
    def model_inputs(self, prompt: str, images: list | None = None) -> dict:
        """The tensors `generate` gets for a rendered prompt (a session with pictures adds their pixels)."""
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        return {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}

    def generate_kwargs(self, settings: GenerationSettings | None = None) -> dict:
        """`generate`'s keyword arguments for `settings` (the session's own by default), inputs aside."""
        return sampling_kwargs(settings or self.settings, eos_token_id=self.eos_token_ids,
                               pad_token_id=self.tokenizer.pad_token_id)

    def _generate_kwargs(self, text: str) -> dict:
        device = next(self.model.parameters()).device
        kwargs = {k: v.to(device) for k, v in self.model_inputs(self.render(self.messages(text))).items()}
        kwargs.update(self.generate_kwargs())
        return kwargs

    def ask(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """Answer `text`; with `on_text`, stream the answer to it piece by piece as it is generated."""
        kwargs = self._generate_kwargs(text)
        with seeded(self.settings.seed):
            if on_text is None:
                output = self.model.generate(**kwargs)
                new = output[0, kwargs["input_ids"].shape[1]:]
                answer, _ = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True),
                                        self.stop_words)
            else:
                answer = self._stream(kwargs, on_text)
        answer = answer.strip()
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        return answer

    def _stream(self, kwargs: dict, on_text: Callable[[str], None]) -> str:
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()

        class _StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids, scores, **_):
                return stop.is_set()

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(kwargs, streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopWhenAsked()]))
        failure: list[BaseException] = []

        def run():
            try:
                self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        filt = StopFilter(self.stop_words)
        try:
            for chunk in streamer:
                piece = filt.feed(chunk)
                if piece:
                    on_text(piece)
                if filt.stopped:
                    stop.set()
            on_text(filt.finish())
        finally:
            stop.set()  # also on Ctrl-C: generate() ends at its next token
            worker.join()
        if failure:
            raise failure[0]
        return filt.text

    def reset(self) -> None:
        self.history.clear()
