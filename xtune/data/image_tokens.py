"""What an image becomes in `input_ids`: the model's own processor decides, xtune only asks it.

The text pipeline tokenizes a rendered conversation once (exact at segment boundaries), with each image
still one image token (`processor.image_token`). Here every such token is replaced by the tokens the
processor writes for that picture (LLaVA: a fixed run of `<image>`; Qwen2-VL: one `<|image_pad|>` per
merged patch; Idefics3: tiles between `<fake_token_around_image>`), all labelled -100: image tokens never
carry loss. The count depends only on the picture's size, so the processor is asked once per size with a
blank picture, and the files are not decoded until a batch needs their pixels. Truncation to
`max_length` never cuts through an image: the cut moves before it and the image is dropped.
"""

from __future__ import annotations

from xtune.data.tokenize import IGNORE_INDEX


class ImageTokens:
    """Expands image tokens with `processor` (one of transformers' vision-language processors)."""

    def __init__(self, processor):
        self.processor = processor
        tokenizer = processor.tokenizer
        self.image_token = processor.image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self._by_size: dict[tuple[int, int], list[int]] = {}
        self._refused: dict[tuple[int, int], str | None] = {}

    def for_size(self, size: tuple[int, int]) -> list[int]:
        """The processor's tokens for one picture of `size` (width, height)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._by_size:
            from PIL import Image

            out = self.processor(text=[self.image_token], images=[[Image.new("RGB", size)]],
                                 add_special_tokens=False)
            self._by_size[size] = [int(t) for t in out["input_ids"][0]]
        return self._by_size[size]

    def refusal(self, size: tuple[int, int]) -> str | None:
        """Why the processor refuses a picture of `size` (Qwen2-VL's: an aspect ratio beyond 200, a side
        under 28 pixels), else None. Asked before tokenizing, so such a picture is a bad record."""
        size = (int(size[0]), int(size[1]))
        if size not in self._refused:
            try:
                self.for_size(size)
                self._refused[size] = None
            except ValueError as exc:
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                self._refused[size] = (f"is {size[0]}x{size[1]} pixels, which the model's processor refuses "
                                       f"({reason}): crop or pad it to a less extreme aspect ratio, or "
                                       "resize it")
        return self._refused[size]

    def expand(self, ids: list[int], labels: list[int], sizes: list[tuple[int, int]]):
        """(ids, labels, spans): each image token replaced by its picture's tokens, labelled -100; spans are
        the (start, end) of every picture's tokens. The text must hold one image token per picture."""
        at = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(at) != len(sizes):
            raise ValueError(f"the rendered text holds {len(at)} image token(s) ({self.image_token!r}) for "
                             f"{len(sizes)} image(s)")
        out_ids, out_labels, spans, pos = [], [], [], 0
        for i, size in zip(at, sizes, strict=True):
            out_ids += ids[pos:i]
            out_labels += labels[pos:i]
            tokens = self.for_size(size)
            spans.append((len(out_ids), len(out_ids) + len(tokens)))
            out_ids += tokens
            out_labels += [IGNORE_INDEX] * len(tokens)
            pos = i + 1
        return out_ids + ids[pos:], out_labels + labels[pos:], spans


def cut_before_images(ids: list[int], labels: list[int], spans: list[tuple[int, int]], max_length: int):
    """(ids, labels, pictures kept) within `max_length`, moving a cut that falls inside a picture's tokens
    to before that picture (its pixels would otherwise have no tokens to fill)."""
    if len(ids) <= max_length:
        return ids, labels, len(spans)
    cut, kept = max_length, len(spans)
    for k, (start, end) in enumerate(spans):
        if end > cut:
            cut, kept = min(cut, start), k
            break
    return ids[:cut], labels[:cut], kept
