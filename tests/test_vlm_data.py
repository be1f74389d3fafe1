"""Image data through the vision-language pipeline: both layouts, the processor's image tokens (never
trained), truncation and packing that count them, bad pictures and markers as one Error per record."""

from __future__ import annotations

import json

import pytest
from conftest import shared_path
from test_vlm_fixtures import (
    draw,
    make_idefics3,
    make_internvl,
    make_llava,
    make_llava_next,
    make_qwen2_5_vl,
    make_qwen2_vl,
    make_smolvlm,
    write_llava,
    write_mllm,
)

from xtune.data.image_batches import build_image_collator
from xtune.data.pipeline import build_report, build_train_dataset
from xtune.data.tokenize import IGNORE_INDEX
from xtune.data.vlm_pipeline import build_image_dataset
from xtune.errors import ConfigError, DataError
from xtune.plugins import PluginSystem

QWEN_PROMPT = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def registry():
    system = PluginSystem()
    system.load_defaults()
    return system.registry


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from xtune.models.processors import load_processor

    return load_processor(make_llava(tmp_path_factory.mktemp("llava")))


def build(cfg, processor, registry, **kwargs):
    cfg = dict(dict(prompt_template="vicuna", max_length=256, pack_to_max_length=False), **cfg)
    return build_image_dataset(cfg, processor, registry=registry, use_cache=False, **kwargs)


def test_mllm_rows_expand_images_and_train_only_the_answers(tmp_path, llava, registry):
    data = write_mllm(tmp_path)
    rows = build(dict(dataset_map="mllm", data_path=str(data)), llava, registry)
    image_id = llava.tokenizer.convert_tokens_to_ids("<image>")
    assert len(rows) == 7 and [len(r) for r in rows["images"]] == [1] * 6 + [2]
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        assert ids.count(image_id) == 16 * len(row["images"])  # (32 / 8)^2 patches, CLS dropped
        assert all(label == IGNORE_INDEX for t, label in zip(ids, labels, strict=True) if t == image_id)
    trained = [t for t in rows[0]["labels"] if t != IGNORE_INDEX]
    assert llava.tokenizer.decode(trained) == " a red square</s>"  # vicuna: "ASSISTANT:" + " answer" + EOS
    assert build_report(rows)["images"] == 8
    batch = build_image_collator(dict(pack_to_max_length=False), llava)([rows[6], rows[0]])
    assert tuple(batch["pixel_values"].shape) == (3, 3, 32, 32)  # row order: two pictures, then one


def test_llava_layout_with_several_images_and_an_image_folder(tmp_path, llava, registry):
    data = write_llava(tmp_path / "pics")
    records = json.loads(data.read_text())
    records[0]["image"] = [records[0]["image"], records[1]["image"]]
    records[0]["conversations"][0]["value"] = "<image>\n<image>\nCompare them."
    moved = tmp_path / "elsewhere.json"
    moved.write_text(json.dumps(records))
    rows = build(dict(dataset_map="llava", data_path=str(moved), image_folder=str(tmp_path / "pics")), llava,
                 registry)
    assert [len(r) for r in rows["images"]] == [2, 1, 1, 1, 1, 1]
    assert rows[0]["images"][1].endswith("1_green_circle.png")


def test_bad_pictures_and_markers_are_one_error_each_nothing_built(tmp_path, llava, registry):
    write_mllm(tmp_path)
    (tmp_path / "pictures" / "broken.png").write_bytes(b"not a picture at all")
    ok = {"role": "assistant", "content": "fine"}
    records = [
        {"messages": [{"role": "user", "content": "<image>a"}, ok], "images": ["pictures/missing.png"]},
        {"messages": [{"role": "user", "content": "<image>b"}, ok], "images": ["pictures/broken.png"]},
        {"messages": [{"role": "user", "content": "<image><image>c"}, ok],
         "images": ["pictures/0_red_square.jpg"]},
        {"messages": [{"role": "user", "content": "<image>d"}, ok], "images": ["https://example.com/a.png"]},
        {"messages": [{"role": "user", "content": "e"}, {"role": "assistant", "content": "<image>"}],
         "images": ["pictures/0_red_square.jpg"]},
        {"messages": [{"role": "user", "content": "<image>f"}, ok], "images": ["pictures/0_red_square.jpg"]},
    ]
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(records))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        build_image_dataset(dict(dataset_map="mllm", data_path=str(data), prompt_template="vicuna",
                                 cache_dir=str(cache)), llava, registry=registry)
    lines = str(info.value).split("\nError: ")
    assert len(lines) == 5 and all("bad.json" in line for line in lines), lines
    text = str(info.value)
    assert "image 'pictures/missing.png': does not exist" in text
    assert "image 'pictures/broken.png': is not a readable image" in text
    assert "2 <image> marker(s) but 1 image(s)" in text
    assert "is a URL" in text and "only user messages can show images" in text
    assert not cache.exists() or not any(cache.iterdir())
    rows = build_image_dataset(dict(dataset_map="mllm", data_path=str(data), prompt_template="vicuna",
                                    skip_bad_records=True), llava, registry=registry, use_cache=False)
    assert len(rows) == 1 and build_report(rows)["skipped_bad_records"] == 5


def test_truncation_never_cuts_an_image_and_packing_counts_its_tokens(tmp_path, llava, registry):
    write_mllm(tmp_path)
    turns = [("user", "<image>one?"), ("assistant", "red"), ("user", "<image>two?"), ("assistant", "green")]
    record = {"messages": [{"role": r, "content": c} for r, c in turns],
              "images": ["pictures/0_red_square.jpg", "pictures/1_green_circle.png"]}
    data = tmp_path / "two.json"
    data.write_text(json.dumps([record]))
    image_id = llava.tokenizer.convert_tokens_to_ids("<image>")
    ids = build(dict(dataset_map="mllm", data_path=str(data)), llava, registry)[0]["input_ids"]
    second = [i for i, t in enumerate(ids) if t == image_id][16]  # where the second picture's tokens start
    row = build(dict(dataset_map="mllm", data_path=str(data), max_length=second + 5), llava, registry)[0]
    assert len(row["input_ids"]) == second and row["input_ids"].count(image_id) == 16
    assert len(row["images"]) == 1
    packed = build(dict(dataset_map="mllm", data_path=str(write_mllm(tmp_path)), pack_to_max_length=True,
                        max_length=200), llava, registry)
    assert len(packed) < 7 and sum(map(len, packed["images"])) == 8
    for row in packed:
        assert row["input_ids"].count(image_id) == 16 * len(row["images"]) and len(row["input_ids"]) <= 200


def test_real_mllm_demo_file_with_drawn_pictures_on_qwen2_vl(tmp_path, registry):
    from xtune.models.processors import load_processor

    demo = shared_path("data", "openai_messages", "llamafactory_mllm_demo_messages.json")
    folder, records = tmp_path / "images", json.loads(demo.read_text())
    for name in {n for r in records for n in r["images"]}:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        draw("blue", "circle", size=(56, 42)).save(folder / name)
    processor = load_processor(make_qwen2_vl(tmp_path / "qwen2_vl"))
    rows = build(dict(dataset_map="mllm", data_path=str(demo), image_folder=str(folder),
                      prompt_template="qwen2_vl_chat"), processor, registry, image_prompt=QWEN_PROMPT)
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert len(rows) == 6 and sum(map(len, rows["images"])) == sum(len(r["images"]) for r in records)
    batch = build_image_collator({}, processor)([rows[0]])
    grid = batch["image_grid_thw"]  # (t, h, w) patches per picture; 2 x 2 of them merge into one token
    assert rows[0]["input_ids"].count(pad) == int(grid.prod(dim=1).sum()) // 4 > 0
    assert (batch["mm_token_type_ids"][batch["input_ids"] == pad] == 1).all()


def test_image_data_with_a_text_model_is_refused(tmp_path, llava, registry):
    data = write_mllm(tmp_path)
    with pytest.raises(ConfigError, match="shows images, but the model is a text model"):
        build_train_dataset(dict(dataset_map="mllm", data_path=str(data), prompt_template="vicuna"),
                            llava.tokenizer, registry=registry, use_cache=False)


FAMILIES = [(make_llava, "vicuna", ""), (make_qwen2_vl, "qwen2_vl_chat", QWEN_PROMPT),
            (make_idefics3, "idefics3", ""), (make_qwen2_5_vl, "qwen2_vl_chat", QWEN_PROMPT),
            (make_llava_next, "mistral", ""), (make_internvl, "internvl_chat", "<IMG_CONTEXT>\n"),
            (make_smolvlm, "idefics3", "")]  # (tiny model, its family's template and image prompt)


@pytest.mark.parametrize("make,template,prompt", FAMILIES)
def test_rows_are_what_the_processor_makes_of_the_saved_template(tmp_path, make, template, prompt, registry):
    """One template path with pictures: xtune's input_ids are the processor's own for the conversation
    rendered by the chat template xtune saves with it, pixels and all."""
    from PIL import Image

    from xtune.models.processors import load_processor
    from xtune.templates.export import export_jinja
    from xtune.templates.images import as_content_parts, vision_jinja

    processor = load_processor(make(tmp_path / "model"))
    data = write_mllm(tmp_path)
    rows = build(dict(dataset_map="mllm", data_path=str(data), prompt_template=template), processor, registry,
                 image_prompt=prompt)
    processor.chat_template = vision_jinja(export_jinja(template, registry=registry),
                                           prompt or processor.image_token)
    for record, row in zip(json.loads(data.read_text()), rows, strict=True):
        text = processor.apply_chat_template(as_content_parts(record["messages"]))
        images = [Image.open(tmp_path / name).convert("RGB") for name in record["images"]]
        ours = processor(text=[text], images=images, add_special_tokens=False)
        assert list(ours["input_ids"][0]) == row["input_ids"]


@pytest.mark.parametrize("make,template,prompt", FAMILIES)
def test_batches_equal_trl_vision_collator(tmp_path, make, template, prompt, registry):
    """TRL's DataCollatorForVisionLanguageModeling (assistant_only_loss, the template exported with
    generation tags) makes the same input_ids, labels and pixels from the same records."""
    import torch
    from PIL import Image

    trl = pytest.importorskip("trl.trainer.sft_trainer")
    from xtune.models.processors import load_processor
    from xtune.templates.export import export_jinja
    from xtune.templates.images import as_content_parts, vision_jinja

    processor = load_processor(make(tmp_path / "model"))
    data = write_mllm(tmp_path)
    rows = build(dict(dataset_map="mllm", data_path=str(data), prompt_template=template), processor, registry,
                 image_prompt=prompt)
    ours = build_image_collator({}, processor)([rows[i] for i in range(len(rows))])
    processor.chat_template = vision_jinja(export_jinja(template, generation_tags=True, registry=registry),
                                           prompt or processor.image_token)
    examples = [{"messages": as_content_parts(r["messages"]),
                 "images": [Image.open(tmp_path / n).convert("RGB") for n in r["images"]]}
                for r in json.loads(data.read_text())]
    theirs = trl.DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)(examples)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["labels"], theirs["labels"])  # TRL ignores the first label too
    assert set(ours) == set(theirs)  # the same keyword arguments for the model
    for name in {"image_grid_thw", "image_sizes", "mm_token_type_ids"} & set(ours):
        assert torch.equal(ours[name], theirs[name]), name
    assert torch.allclose(_pictures(ours["pixel_values"]), _pictures(theirs["pixel_values"]))


def _pictures(pixel_values):
    """The real pictures of a batch, in order: Idefics3's and SmolVLM's (batch, picture, ...) layout (and
    LLaVA-NeXT's (picture, tile, ...)) flattened, the all-zero padding pictures (TRL pads each row to the
    most pictures; LLaVA-NeXT pads tiles) dropped, as the model does."""
    if pixel_values.dim() == 5:
        pixel_values = pixel_values.flatten(0, 1)
        pixel_values = pixel_values[pixel_values.flatten(1).abs().sum(1) > 0]
    return pixel_values.float()
