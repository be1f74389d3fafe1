"""Bad pictures and vision-language data, nothing silently wrong (issue 22): a picture that opens but does
not decode, a 20000 x 20000 picture, a 4000 x 12 one, image records under a text model or a text dataset
map, the documented `skip_bad_records` spellings and a VLM recipe given a text model. Each is one `Error:`
line naming the file, the record, the field (or the picture and its size) and what to do, exit 2, with
nothing written; pictures are decoded once (verdicts cached by path, size and mtime)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib

import pytest
from test_engine_fixtures import make_assets
from test_vlm_fixtures import make_llava, make_qwen2_vl, write_mllm

from xtune.cli.main import main
from xtune.errors import ConfigError, DataError

LLAVA_RECIPE = "llava_1_5_7b_hf_lora_mllm_demo_e3"
QWEN_RECIPE = "qwen2_vl_2b_instruct_lora_mllm_demo_e3"
TEXT_RECIPE = "llama2_7b_chat_lora_alpaca_e3"


def truncated_jpeg(path):
    """A JPEG cut in its scan data: Pillow's open and verify() pass, decoding fails."""
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.7)])
    return path


def huge_png(path, width=20000, height=20000):
    """A PNG whose header says `width` x `height` (a few hundred bytes on disk, nothing allocated)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height, then its checksum
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("bad_vlm")
    data = write_mllm(root / "data")
    pictures = root / "data" / "pictures"
    truncated_jpeg(pictures / "cut.jpg")
    huge_png(pictures / "huge.png")
    Image.new("RGB", (4000, 12), (90, 90, 90)).save(pictures / "wide.png")
    text_model, _ = make_assets(root / "text")
    return dict(root=root, data=data, pictures=pictures, llava=make_llava(root / "llava"),
                qwen=make_qwen2_vl(root / "qwen2_vl"), text=text_model)


def with_pictures(assets, name: str, changes: dict[int, str]):
    """The mllm data with record i showing picture changes[i] instead of its own."""
    records = json.loads(assets["data"].read_text())
    for i, picture in changes.items():
        records[i]["images"] = [f"pictures/{picture}"]
    path = assets["root"] / "data" / name
    path.write_text(json.dumps(records))
    return path


def one_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]
    return lines[0]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.integration
def test_a_picture_that_does_not_decode_is_named_with_its_record(assets, cache, capsys):
    data = with_pictures(assets, "cut.json", {2: "cut.jpg"})
    opts = [f"pretrained_model_name_or_path={assets['llava']}", f"data_path={data}",
            f"image_folder={data.parent}"]
    assert main(["check-custom-dataset", LLAVA_RECIPE, "--cfg-options", *opts]) == 2
    one_error(capsys, "cut.json record 2", "field 'images'", "'pictures/cut.jpg'", "truncated")
    assert not cache.exists()  # no rows, no picture verdicts
    for skip in ("skip_bad_records=True", "train_dataset.skip_bad_records=True"):  # both documented
        assert main(["check-custom-dataset", LLAVA_RECIPE, "--cfg-options", *opts, skip]) == 0
        assert "(and 1 bad ones skipped)" in capsys.readouterr().out


def test_pictures_are_decoded_once_per_path_size_and_mtime(tmp_path, cache, monkeypatch):
    from PIL import Image

    from xtune.data import image_checks
    from xtune.data.images import resolve_images

    for i in range(10):
        Image.new("RGB", (40 + i, 30), (i * 20, 0, 0)).save(tmp_path / f"{i}.png")
    truncated_jpeg(tmp_path / "cut.jpg")
    names = [f"{i % 10}.png" for i in range(200)] + ["cut.jpg"]
    conversations = [[{"role": "user", "content": "<image>", "images": [n]}] for n in names]
    wheres = [f"d.json record {i}" for i in range(len(names))]
    decoded = []
    monkeypatch.setattr(image_checks, "examine", lambda p, real=image_checks.examine: decoded.append(p) or
                        real(p))

    def check(fresh_process: bool):
        if fresh_process:
            monkeypatch.setattr(image_checks, "_SEEN", {})
        checks = image_checks.PictureChecks()
        paths, kept, problems = resolve_images(conversations, wheres, tmp_path, checks=checks)
        checks.save()
        assert len(kept) == len(paths) == 200 and len(problems) == 1
        assert problems[0].startswith("d.json record 200: field 'images': image 'cut.jpg': is not a readable "
                                      "image (OSError: image file is truncated")
        return checks.decoded

    assert check(fresh_process=True) == 11  # ten pictures shown by 200 records, and the bad one
    assert check(fresh_process=False) == 0  # this process remembers
    assert check(fresh_process=True) == 1  # the disk remembers the good ones; the bad one is decoded again
    os.utime(tmp_path / "3.png", ns=(1, 1))  # changed since: decoded again
    assert check(fresh_process=True) == 2 and len(decoded) == 14


@pytest.mark.integration
def test_image_records_under_a_text_recipe_are_refused_or_explicitly_ignored(assets, cache, capsys, caplog):
    from xtune.data.from_recipe import build_dataset, dataset_cfg, load_recipe_cfg
    from xtune.models.build import recipe_tokenizer
    from xtune.plugins import get_registry

    opts = [f"pretrained_model_name_or_path={assets['text']}", f"data_path={assets['data']}"]
    for dataset_map in ("openai", "mllm"):
        assert main(["check-custom-dataset", TEXT_RECIPE, "--cfg-options", *opts,
                     f"dataset_map={dataset_map}"]) == 2
        one_error(capsys, "mllm.json record 0", "field 'images'", "text model", "vision-language",
                  "ignore_images=True")
    assert not cache.exists()
    registry = get_registry()
    recipe = load_recipe_cfg(TEXT_RECIPE, registry, [*opts, "dataset_map=openai", "ignore_images=True",
                                                     "pack_to_max_length=False"])
    tokenizer = recipe_tokenizer(recipe, registry)
    rows = build_dataset(dataset_cfg(recipe, registry), tokenizer, registry=registry)
    assert len(rows) == 7 and not any("<image>" in tokenizer.decode(r["input_ids"]) for r in rows)
    assert "ignore_images=True: the images of 7 of 7 records" in caplog.text


@pytest.mark.integration
def test_a_text_dataset_map_under_a_vlm_recipe_is_refused(assets, cache, capsys):
    opts = [f"pretrained_model_name_or_path={assets['llava']}", f"data_path={assets['data']}",
            "dataset_map=openai"]
    assert main(["check-custom-dataset", LLAVA_RECIPE, "--cfg-options", *opts]) == 2
    one_error(capsys, "mllm.json record 0", "field 'images'", "dataset map 'openai' reads no images",
              "dataset_map='mllm'")
    assert not cache.exists()
    assert main(["check-custom-dataset", "--data", str(assets["data"]), "--format", "openai"]) == 2
    one_error(capsys, "mllm.json record 0", "field 'images'", "dataset map 'openai' reads no images")
    assert main(["check-custom-dataset", "--data", str(assets["data"]), "--format", "mllm"]) == 0


@pytest.mark.integration
def test_huge_and_extreme_pictures_are_bad_records_that_skip_bad_records_skips(assets, cache):
    from xtune.data.pipeline import build_report
    from xtune.data.vlm_pipeline import build_image_dataset
    from xtune.models.processors import load_processor
    from xtune.plugins import get_registry

    data = with_pictures(assets, "odd.json", {1: "huge.png", 3: "wide.png"})
    cfg = dict(dataset_map="mllm", data_path=str(data), prompt_template="qwen2_vl_chat", max_length=256)
    processor, registry = load_processor(assets["qwen"]), get_registry()
    with pytest.raises(DataError) as info:
        build_image_dataset(cfg, processor, registry=registry)
    huge, wide = str(info.value).split("\nError: ")
    assert "odd.json record 1" in huge and "field 'images'" in huge and "20000x20000 pixels" in huge
    assert "resize it" in huge
    assert "odd.json record 3" in wide and "4000x12 pixels" in wide and "aspect ratio" in wide
    assert "crop" in wide and "marker" not in str(info.value) and not cache.exists()
    rows = build_image_dataset({**cfg, "skip_bad_records": True}, processor, registry=registry)
    assert len(rows) == 5 and build_report(rows)["skipped_bad_records"] == 2


@pytest.mark.integration
def test_training_on_a_huge_picture_stops_before_anything_is_written(assets, cache, tmp_path, capsys):
    data = with_pictures(assets, "huge.json", {4: "huge.png"})
    work = tmp_path / "work"
    assert main(["train", QWEN_RECIPE, "--work-dir", str(work), "--cfg-options",
                 f"pretrained_model_name_or_path={assets['qwen']}", f"data_path={data}", "max_steps=1",
                 f"image_folder={data.parent}",
                 "model.gradient_checkpointing=False"]) == 2
    one_error(capsys, "huge.json record 4", "field 'images'", "'pictures/huge.png'", "20000x20000",
              "resize")
    assert not work.exists() and not cache.exists()


@pytest.mark.integration
def test_chat_names_a_huge_or_extreme_picture_and_what_to_do(assets, capsys):
    for picture, words in (("huge.png", ("20000x20000 pixels", "resize it")),
                           ("wide.png", ("4000x12 pixels", "aspect ratio", "crop"))):
        path = assets["pictures"] / picture
        assert main(["chat", str(assets["qwen"]), "--image", str(path), "--prompt", "hi",
                     "--max-new-tokens", "2"]) == 2
        line = one_error(capsys, str(path), *words)
        assert "DecompressionBombError" not in line and "ValueError" not in line


@pytest.mark.integration
def test_a_vlm_recipe_given_a_text_model_names_its_architecture(assets, cache, capsys):
    assert main(["check-custom-dataset", LLAVA_RECIPE, "--cfg-options",
                 f"pretrained_model_name_or_path={assets['text']}", f"data_path={assets['data']}"]) == 2
    line = one_error(capsys, str(assets["text"]), "LlamaForCausalLM", "not a vision-language model",
                     "text recipe")
    assert "TokenizersBackend" not in line and "LOCAL_FOLDER" not in line
    assert not cache.exists()


def test_skip_bad_records_is_a_setting_in_both_documented_spellings():
    from xtune.data.from_recipe import dataset_cfg, load_recipe_cfg
    from xtune.plugins import get_registry

    registry = get_registry()
    for option in ("skip_bad_records=True", "train_dataset.skip_bad_records=True"):
        assert dataset_cfg(load_recipe_cfg(TEXT_RECIPE, registry, [option]), registry)["skip_bad_records"]
    assert "skip_bad_records" not in dataset_cfg(load_recipe_cfg(TEXT_RECIPE, registry, []), registry)
    with pytest.raises(ConfigError, match="expected a bool"):
        load_recipe_cfg(TEXT_RECIPE, registry, ["train_dataset.skip_bad_records=3"])
