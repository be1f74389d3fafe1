"""Batches with pictures: the text collator's tensors plus the processor's pixel inputs.

A row lists its image files in the order of its image tokens; a batch's pictures are decoded here and
given to the processor's own image processor in row order, which is the order in which the model fills
image tokens with image features across the batch. What it returns (pixel_values, and image_grid_thw for
Qwen2-VL, pixel_attention_mask for Idefics3, image_sizes for LLaVA-NeXT) goes to the model as the
processor would hand it over (InternVL's tiles per picture, `num_patches`, stay behind as there), with the
processor's per-token modality ids where the model asks for them (Qwen2-VL).
"""

from __future__ import annotations

from xtune.data.collate import Collator, build_collator
from xtune.data.images import load_image

NOT_FOR_THE_MODEL = ("num_patches",)


def pixel_inputs(processor, images: list) -> dict:
    """The image processor's tensors for `images` (PIL pictures, in token order), as the processor itself
    hands them to the model."""
    out = processor.image_processor(images=images, return_tensors="pt")
    return {k: v for k, v in out.items() if k not in NOT_FOR_THE_MODEL}


class ImageCollator:
    """list of rows (input_ids, labels, images [, position_ids]) -> the model's keyword arguments."""

    def __init__(self, collator: Collator, processor):
        self.collator = collator
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        batch = self.collator(rows)
        paths = [path for row in rows for path in row.get("images") or ()]
        if paths:
            batch.update(pixel_inputs(self.processor, [load_image(p) for p in paths]))
        if getattr(self.processor, "return_mm_token_type_ids", False):  # Qwen2-VL's M-RoPE reads them
            types = self.processor.create_mm_token_type_ids(batch["input_ids"])
            batch["mm_token_type_ids"] = torch.tensor(types)
        return batch


def build_image_collator(cfg: dict, processor) -> ImageCollator:
    """The collator for a vision-language recipe's `train_dataset` settings."""
    return ImageCollator(build_collator(cfg, processor.tokenizer), processor)
