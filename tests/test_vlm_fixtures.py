"""Tiny vision-language assets, built offline in seconds: pictures drawn with Pillow, image data in
LLaVA's and LLaMA-Factory's layouts, a tiny CLIP vision encoder (for the LLaVA composition), and tiny
random LLaVA, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, InternVL, Idefics3 and SmolVLM models with their processors
(slow PIL image processors).

Imported by tests/test_vlm_*.py; the `test_` checks below keep the fixtures themselves honest.
"""

from __future__ import annotations

import json
from pathlib import Path

from test_engine_fixtures import make_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40),
           "purple": (140, 40, 170), "white": (250, 250, 250)}
SHAPES = ("square", "circle", "triangle")
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def draw(colour: str, shape: str, size=(48, 40)):
    """A picture: a coloured shape on a grey ground."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (128, 128, 128))
    pen = ImageDraw.Draw(img)
    box = (6, 6, size[0] - 6, size[1] - 6)
    fill = COLOURS[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "triangle":
        pen.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill)
    else:
        pen.rectangle(box, fill=fill)
    return img


def make_pictures(folder: Path, n: int = 6) -> list[tuple[str, str, str]]:
    """(relative path, colour, shape) of `n` pictures saved under `folder`/pictures, sizes varying."""
    (folder / "pictures").mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        colour, shape = list(COLOURS)[i % len(COLOURS)], SHAPES[i % len(SHAPES)]
        rel = f"pictures/{i}_{colour}_{shape}.{'png' if i % 2 else 'jpg'}"
        draw(colour, shape, size=(40 + 8 * (i % 3), 40 + 4 * (i % 2))).save(folder / rel)
        out.append((rel, colour, shape))
    return out


def write_mllm(folder: Path, n: int = 6) -> Path:
    """LLaMA-Factory's mllm layout (messages + images), one record with two pictures."""
    pictures = make_pictures(folder, n)
    records = [{"messages": [{"role": "user", "content": "<image>What is in the picture?"},
                             {"role": "assistant", "content": f"a {colour} {shape}"}], "images": [rel]}
               for rel, colour, shape in pictures]
    (a, ca, sa), (b, cb, sb) = pictures[0], pictures[1]
    records.append({"messages": [{"role": "user", "content": "<image>And this one?<image>"},
                                 {"role": "assistant", "content": f"a {ca} {sa}, then a {cb} {sb}"}],
                    "images": [a, b]})
    path = folder / "mllm.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def write_llava(folder: Path, n: int = 6) -> Path:
    """LLaVA's layout (image + conversations), caption style."""
    records = [{"id": str(i), "image": rel,
                "conversations": [{"from": "human", "value": "<image>\nDescribe the picture."},
                                  {"from": "gpt", "value": f"a {colour} {shape} on grey"}]}
               for i, (rel, colour, shape) in enumerate(make_pictures(folder, n))]
    path = folder / "llava.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def make_clip(folder: Path) -> Path:
    """A tiny CLIP vision encoder (32 x 32 pictures, 8 x 8 patches) with its image processor."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**VISION, image_size=32, patch_size=8)).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder)
    return folder


def make_llama(folder: Path, tokenizer: Path) -> Path:
    """A random 2-layer Llama (hidden size 64) with the 32k Llama-2 tokenizer at `tokenizer` (the shared
    tiny Llama-2's): the language model of the test LLaVA, wide enough to learn in a few steps."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer) / name, folder / name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, bos_token_id=1, eos_token_id=2, **dict(TEXT, hidden_size=64,
                                                                                    intermediate_size=128))
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _tokenizer(folder: Path, specials: list[str]):
    tok = make_tokenizer(folder)
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def make_llava(folder: Path) -> Path:
    """A tiny random LlavaForConditionalGeneration with its LlavaProcessor."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _tokenizer(folder, ["<image>"])
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, pad_token_id=3, **TEXT)
    vision = CLIPVisionConfig(**VISION, image_size=32, patch_size=8)
    config = LlavaConfig(vision_config=vision, text_config=text, image_seq_length=16,
                         image_token_index=tok.convert_tokens_to_ids("<image>"))
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                   vision_feature_select_strategy="default").save_pretrained(folder)
    return folder


def make_qwen2_vl(folder: Path) -> Path:
    """A tiny random Qwen2VLForConditionalGeneration with its processor (images only: no torchvision)."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
    )

    from xtune.models.processors import image_only

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>",
                "<|video_pad|>", "<|endoftext|>"]
    tok = _tokenizer(folder, specials)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    torch.manual_seed(0)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), rope_scaling=dict(type="mrope", mrope_section=[2, 1, 1]),
                         bos_token_id=1, eos_token_id=ids["<|im_end|>"], pad_token_id=3, **TEXT),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, in_chans=3, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    images = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    image_only(Qwen2VLProcessor)(image_processor=images, tokenizer=tok).save_pretrained(folder)
    return folder


def make_idefics3(folder: Path) -> Path:
    """A tiny random Idefics3ForConditionalGeneration with its processor (no image splitting)."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    tok = _tokenizer(folder, ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"])
    torch.manual_seed(0)
    config = Idefics3Config(
        text_config=dict(model_type="llama", vocab_size=len(tok), bos_token_id=1, pad_token_id=3,
                         eos_token_id=tok.convert_tokens_to_ids("<end_of_utterance>"), **TEXT),
        vision_config=dict(**VISION, image_size=32, patch_size=8), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"))
    Idefics3ForConditionalGeneration(config).save_pretrained(folder)
    images = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                       max_image_size={"longest_edge": 32})
    Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4).save_pretrained(folder)
    return folder


def make_qwen2_5_vl(folder: Path) -> Path:
    """A tiny random Qwen2_5_VLForConditionalGeneration (window attention in its first vision block) with
    its processor (images only)."""
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessorPil,
    )

    from xtune.models.processors import image_only

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>",
                "<|video_pad|>", "<|endoftext|>"]
    tok = _tokenizer(folder, specials)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), rope_scaling=dict(type="mrope", mrope_section=[2, 1, 1]),
                         bos_token_id=1, eos_token_id=ids["<|im_end|>"], pad_token_id=3, **TEXT),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    images = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    image_only(Qwen2_5_VLProcessor)(image_processor=images, tokenizer=tok).save_pretrained(folder)
    return folder


def make_llava_next(folder: Path) -> Path:
    """A tiny random LlavaNextForConditionalGeneration (any-resolution tiles of 32 x 32) with its
    LlavaNextProcessor."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tok = _tokenizer(folder, ["<image>"])
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, pad_token_id=3, **TEXT)
    vision = CLIPVisionConfig(**VISION, image_size=32, patch_size=8)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=pinpoints,
                             image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=16)
    LlavaNextForConditionalGeneration(config).save_pretrained(folder)
    images = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                        image_grid_pinpoints=pinpoints)
    LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                       vision_feature_select_strategy="default").save_pretrained(folder)
    return folder


def make_internvl(folder: Path) -> Path:
    """A tiny random InternVLForConditionalGeneration (transformers' own, a Qwen2 language model) with its
    InternVLProcessor (images only; every picture 2 tiles of 32 x 32 and a thumbnail, 4 tokens each)."""
    import torch
    from transformers import (
        AutoTokenizer,
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
    )

    from xtune.models.processors import image_only

    parts = dict(start_image_token="<img>", end_image_token="</img>", context_image_token="<IMG_CONTEXT>",
                 video_token="<video>")
    _tokenizer(folder, ["<|im_start|>", "<|im_end|>", *parts.values()]).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder, extra_special_tokens=parts)  # the processor reads these names
    torch.manual_seed(0)
    config = InternVLConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tok), bos_token_id=1, pad_token_id=3,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), **TEXT),
        vision_config=dict(**VISION, image_size=32, patch_size=8), image_seq_length=4,
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5)
    InternVLForConditionalGeneration(config).save_pretrained(folder)
    images = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=2,
                                      max_patches=2)
    image_only(InternVLProcessor)(image_processor=images, tokenizer=tok, image_seq_length=4).save_pretrained(
        folder)
    return folder


def make_smolvlm(folder: Path) -> Path:
    """A tiny random SmolVLMForConditionalGeneration with its SmolVLMProcessor (images only, no splitting)."""
    import torch
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessorPil,
        SmolVLMProcessor,
    )

    from xtune.models.processors import image_only

    tok = _tokenizer(folder, ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"])
    torch.manual_seed(0)
    config = SmolVLMConfig(
        text_config=dict(model_type="llama", vocab_size=len(tok), bos_token_id=1, pad_token_id=3,
                         eos_token_id=tok.convert_tokens_to_ids("<end_of_utterance>"), **TEXT),
        vision_config=dict(**VISION, image_size=32, patch_size=8), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"))
    SmolVLMForConditionalGeneration(config).save_pretrained(folder)
    images = SmolVLMImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                      max_image_size={"longest_edge": 32})
    image_only(SmolVLMProcessor)(image_processor=images, tokenizer=tok, image_seq_len=4).save_pretrained(
        folder)
    return folder


def test_pictures_and_records(tmp_path):
    from PIL import Image

    data = json.loads(write_mllm(tmp_path).read_text())
    assert len(data) == 7 and data[-1]["images"][1] == data[1]["images"][0]
    with Image.open(tmp_path / data[0]["images"][0]) as img:
        assert img.size == (40, 40) and img.getpixel((20, 20)) != (128, 128, 128)


def test_tiny_models_load_back(tmp_path):
    from transformers import AutoModelForImageTextToText

    from xtune.models.processors import load_processor

    for make in (make_llava, make_qwen2_vl, make_idefics3, make_qwen2_5_vl, make_llava_next, make_internvl,
                 make_smolvlm):
        folder = make(tmp_path / make.__name__)
        model = AutoModelForImageTextToText.from_pretrained(folder)
        processor = load_processor(folder)
        assert sum(p.numel() for p in model.parameters()) < 200_000
        assert processor.tokenizer.convert_tokens_to_ids(processor.image_token) == model.config.image_token_id
        processor.save_pretrained(tmp_path / "again" / make.__name__)  # settings survive a save (image_only)
        again = load_processor(tmp_path / "again" / make.__name__)
        for name in ("image_seq_len", "image_seq_length", "patch_size", "num_additional_image_tokens"):
            assert getattr(again, name, None) == getattr(processor, name, None), (make.__name__, name)
    assert load_processor(tmp_path / "make_internvl").image_seq_length == 4
    assert load_processor(tmp_path / "make_smolvlm").image_seq_len == 4
