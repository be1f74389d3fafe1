"""A conversation with a vision-language model: pictures go with the next message, and stay in the history.

`add_image(path)` (`--image FILE`, or `/image PATH` in the REPL) attaches a picture to the next message;
a message without `<image>` markers gets one per attached picture in front of its text. The prompt is
rendered exactly as in training (the xtune template, the markers then written as the model's image
prompt) and the processor turns it and every picture of the conversation so far into the model's inputs,
so the model sees what it was trained on. A folder written by `xtune convert` is recognised by its saved
template; a model from the hub chats with its processor's own template.
"""

from __future__ import annotations

from collections.abc import Callable

from xtune.chat.session import ChatSession
from xtune.data.images import IMAGES, load_image
from xtune.errors import UsageError
from xtune.models.vlm import image_prompt_of
from xtune.templates.export import find_template_name
from xtune.templates.images import IMAGE_MARKER, as_content_parts, count_images, with_image_prompt


class VisionChatSession(ChatSession):
    """A ChatSession over `processor` (tokenizer + image processor) that also shows the model pictures."""

    def __init__(self, model, processor, *, registry, template: str | None = None, **kwargs):
        super().__init__(model, processor.tokenizer, registry=registry, template=template, **kwargs)
        self.processor = processor
        self.image_prompt = image_prompt_of(model, self.registry) or processor.image_token
        self.pending: list[str] = []
        if self.use_tokenizer_template and self.template is None:  # a folder xtune wrote?
            name = find_template_name(processor.tokenizer.chat_template, registry=self.registry,
                                      image_prompt=self.image_prompt)
            if name:
                self.template, self.use_tokenizer_template = name, False
                self.set_stops()

    def add_image(self, path: str) -> None:
        """Attach the picture at `path` to the next message. UsageError when it does not decode, has more
        pixels than Pillow opens, or has a shape the processor refuses (Qwen2-VL: an aspect ratio beyond
        200): checked here, so no raw error surfaces when the message is sent."""
        from pathlib import Path

        from xtune.data.image_checks import picture_verdict
        from xtune.data.image_tokens import ImageTokens

        verdict = picture_verdict(Path(path).expanduser())
        problem = verdict.problem or ImageTokens(self.processor).refusal(verdict.size)
        if problem:
            raise UsageError(f"image {path!r} {problem}")
        self.pending.append(str(Path(path).expanduser()))

    def render(self, messages: list[dict]) -> str:
        if self.use_tokenizer_template:  # the processor's own template reads content lists
            return self.processor.apply_chat_template(as_content_parts(messages), tokenize=False,
                                                      add_generation_prompt=True)
        return with_image_prompt(super().render(messages), self.image_prompt)

    def model_inputs(self, prompt: str, images: list | None = None) -> dict:
        """The processor's tensors for `prompt` with `images` (decoded pictures, one per image prompt in
        it), by default the pictures of the conversation so far and the attached ones."""
        if images is None:
            images = [load_image(p) for m in self.history for p in m.get(IMAGES, ())]
            images += [load_image(p) for p in self.pending]
        out = self.processor(text=[prompt], images=images or None, return_tensors="pt",
                             add_special_tokens=False)
        return {k: v for k, v in out.items() if hasattr(v, "to") and k != "token_type_ids"}

    def ask(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        markers = count_images(text)
        if markers == 0 and self.pending:
            text = IMAGE_MARKER * len(self.pending) + "\n" + text
        elif markers != len(self.pending):
            raise UsageError(f"the message has {markers} {IMAGE_MARKER} marker(s) for {len(self.pending)} "
                             "attached image(s)",
                             hint="attach one image per marker, or leave the markers out")
        answer = super().ask(text, on_text)
        if self.pending:
            self.history[-2][IMAGES] = self.pending
        self.pending = []
        return answer

    def reset(self) -> None:
        super().reset()
        self.pending = []

