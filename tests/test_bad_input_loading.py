"""Merging and loading with the wrong pieces: one `Error:` line, exit 2, nothing written (issue 22).

An adapter merged into (or chatted with on) a base of another family, a same-shaped other base, a model
folder without tokenizer files, an adapter folder given as the model, a truncated GGUF file, and a
library's message about an optional package that should not reach the user's terminal. Models are the
tiny ones of test_export_helpers and test_vlm_fixtures.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from test_export_helpers import build_model, build_tokenizer, shared_gguf, tiny_model_dir, trained_lora_model

from xtune.cli.main import main
from xtune.plugins import get_registry


def _one_error(capsys, *words: str) -> str:
    """The single `Error:` line of the last command, which must name every one of `words`."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, lines
    assert all(w in lines[0] for w in words), (lines[0], words)
    return lines[0]


# ------------------------------------------------------------------ an adapter of another family (VLM)
@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """A tiny LLaVA and a tiny Qwen2-VL, and a Qwen2-VL LoRA adapter (with its trained projector `merger`)
    exported as `xtune train` exports one."""
    from test_vlm_fixtures import make_llava, make_qwen2_vl

    from xtune.export.model_card import training_info
    from xtune.export.pth_to_hf import _saved, save_hf
    from xtune.models.build import build_trainable, recipe_processor
    from xtune.plan import resolve_plan
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    root, registry = tmp_path_factory.mktemp("vlm"), get_registry()
    llava, qwen = make_llava(root / "llava"), make_qwen2_vl(root / "qwen2_vl")
    cfg = load_recipe(resolve_recipe("qwen2_vl_2b_instruct_lora_mllm_demo_e3", registry),
                      [f"pretrained_model_name_or_path={qwen}"])
    plan = resolve_plan(cfg, registry)
    trained = build_trainable(cfg, registry, plan, for_export=True)
    processor = recipe_processor(cfg, registry)
    info = training_info(cfg, recipe="qwen2_vl", step=1, final_loss=1.0, method=trained.method.name,
                         uses_peft=True)
    model, uses_peft, info, prompt = _saved(trained.model, cfg, plan, registry, trained.method, info,
                                            processor)
    save_hf(model, processor, root / "adapter", info=info, uses_peft=uses_peft, registry=registry,
            image_prompt=prompt)
    return {"root": root, "llava": llava, "qwen": qwen, "adapter": root / "adapter"}


@pytest.mark.integration
def test_merge_refuses_an_adapter_trained_on_another_family(vlm, capsys):
    out = vlm["root"] / "merged"
    assert main(["convert", "merge", str(vlm["llava"]), str(vlm["adapter"]), str(out)]) == 2
    _one_error(capsys, "qwen2_vl", "llava", str(vlm["adapter"]), str(vlm["qwen"]))
    assert not out.exists()


@pytest.mark.integration
def test_chat_refuses_an_adapter_trained_on_another_family(vlm, capsys):
    assert main(["chat", str(vlm["llava"]), "--adapter", str(vlm["adapter"]), "--prompt", "Hi"]) == 2
    _one_error(capsys, "qwen2_vl", "llava", str(vlm["adapter"]))


@pytest.mark.integration
def test_the_recorded_family_alone_refuses_it_and_a_dropped_projector_too(vlm, capsys):
    """The recorded base is gone: xtune_info.json still says qwen2_vl. Without that record either (a plain
    PEFT adapter of a hub model), the projector that has no place in a LLaVA refuses it."""
    adapter = vlm["root"] / "adapter_hub"
    shutil.copytree(vlm["adapter"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2-VL"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    out = vlm["root"] / "merged_hub"
    assert main(["convert", "merge", str(vlm["llava"]), str(adapter), str(out)]) == 2
    _one_error(capsys, "qwen2_vl", "llava")
    (adapter / "xtune_info.json").unlink()
    assert main(["convert", "merge", str(vlm["llava"]), str(adapter), str(out)]) == 2
    _one_error(capsys, "merger", "no place", str(adapter))
    assert not out.exists()


# ------------------------------------------------------------------ text models
@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """Base A, an adapter trained on it, and B: another model of exactly A's shapes."""
    root = tmp_path_factory.mktemp("text")
    base = tiny_model_dir(root / "base_a")
    trained_lora_model(base).save_pretrained(root / "adapter")
    build_model(len(build_tokenizer()), seed=7).save_pretrained(root / "base_b")
    build_tokenizer().save_pretrained(root / "base_b")
    return {"root": root, "a": base, "b": root / "base_b", "adapter": root / "adapter"}


@pytest.mark.integration
def test_merge_into_a_same_shaped_other_base_warns_naming_both(text, caplog):
    adapter = str(text["adapter"])
    with caplog.at_level(logging.WARNING, logger="xtune"):
        assert main(["convert", "merge", str(text["b"]), adapter, str(text["root"] / "m_b")]) == 0
    warned = [r.getMessage() for r in caplog.records if "trained on base" in r.getMessage()]
    assert len(warned) == 1 and str(text["a"]) in warned[0] and str(text["b"]) in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xtune"):
        assert main(["convert", "merge", str(text["a"]), adapter, str(text["root"] / "m_a")]) == 0
    assert not [r for r in caplog.records if "trained on base" in r.getMessage()]


@pytest.mark.integration
def test_chat_on_a_folder_without_tokenizer_files_says_so(text, capsys):
    folder = text["root"] / "no_tokenizer"
    shutil.copytree(text["a"], folder, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    assert main(["chat", str(folder), "--prompt", "Hi"]) == 2
    _one_error(capsys, "has no tokenizer files", "tokenizer.json", "tokenizer.model", str(folder))


def test_chat_on_an_adapter_folder_names_its_base(text, capsys):
    assert main(["chat", str(text["adapter"]), "--prompt", "Hi"]) == 2
    _one_error(capsys, "PEFT adapter", f"xtune chat {text['a']} --adapter {text['adapter']}")


# ------------------------------------------------------------------ GGUF files
@pytest.mark.parametrize("keep", [100, -50_000], ids=["header", "tensor-data"])
def test_chat_on_a_truncated_gguf_names_it(tmp_path, keep, capsys):
    data = shared_gguf().read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:keep])
    assert main(["chat", str(cut), "--prompt", "Hi"]) == 2
    _one_error(capsys, "GGUF file", "truncated", str(cut))


# ------------------------------------------------------------------ library noise
def _shown(logger: str, message: str) -> bool:
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, None, None)
    return bool(logging.getLogger(logger).filter(record))


def test_known_library_noise_is_dropped_unless_debug(tmp_path, capsys):
    bnb = "bitsandbytes.backends.cpu.ops"
    noise = ("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
             "`pip install kernels` and the kernels >= 0.11.1")
    assert main(["chat", str(tmp_path / "missing"), "--prompt", "Hi"]) == 2
    assert not _shown(bnb, noise)
    assert not _shown("DeepSpeed", "Setting accelerator to CPU. If you have GPU or other accelerator, we "
                                   "were unable to detect it.")
    assert _shown(bnb, "some other bitsandbytes warning")
    assert main(["chat", str(tmp_path / "missing"), "--prompt", "Hi", "--debug"]) == 2
    assert _shown(bnb, noise)
    capsys.readouterr()
