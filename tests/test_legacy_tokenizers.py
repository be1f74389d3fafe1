"""The legacy families' tokenizers without hub code: built from their SentencePiece model, they encode like
the hub tokenizer classes did under transformers 4.x (ids recorded in tests/assets/legacy/*/reference.json
and, for InternLM's real 103k vocabulary, tokenizer_golden/internlm_v7_sft.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import shared_path

from xtune.plugins import get_registry

ASSETS = Path(__file__).resolve().parent / "assets" / "legacy"
FAMILIES = ["internlm", "internlm_20b", "internlm2", "internlm2_5", "baichuan", "baichuan2_7b", "chatglm3"]


def golden(folder: Path) -> list[dict]:
    if not (folder / "reference.json").is_file():
        pytest.skip(f"{folder} missing (tools/make_legacy_fixtures.py writes it)")
    return json.loads((folder / "reference.json").read_text(encoding="utf-8"))["tokenizer"]


# ChatGLM3's class of Dec 2023 (the reference) reads `[gMASK]` and `sop` in text as plain text; its later
# revision's tokenizer_config.json and the official chat template (`[gMASK]sop<|user|>...`) treat them as
# tokens, and so does the derived tokenizer. It also reads `<s>` / `</s>` in text as BOS / EOS (transformers
# registers a tokenizer's special tokens so), where that class spells them out piece by piece. Strings that
# contain any of these differ on purpose.
CHATGLM_COMMANDS = ("[gMASK]", "sop", "[MASK]", "[sMASK]", "eop", "<s>", "</s>")


def expected_ids(name: str, case: dict) -> list[int] | None:
    """The hub's ids for a string; ChatGLM3's with its role tokens recognised (`encode_special_tokens=True`,
    as the derived tokenizer always does); None for the strings that differ on purpose."""
    if name == "chatglm3":
        if any(c in case["text"] for c in CHATGLM_COMMANDS):
            return None
        return case["ids_encode_special_tokens"]
    return case["ids"]


@pytest.mark.parametrize("name", FAMILIES)
def test_derived_tokenizer_encodes_like_the_hub_class(name):
    from xtune.models.loading import load_tokenizer

    folder = ASSETS / name
    cases = golden(folder)
    tokenizer = load_tokenizer({"pretrained_model_name_or_path": str(folder)}, registry=get_registry())
    assert not (folder / "tokenizer.json").exists()  # built from tokenizer.model, as for a hub download
    checked = [c for c in cases if expected_ids(name, c) is not None]
    assert len(checked) >= len(cases) - 3
    wrong = [(c["text"], tokenizer.encode(c["text"]), expected_ids(name, c)) for c in checked
             if tokenizer.encode(c["text"]) != expected_ids(name, c)]
    assert not wrong, f"{len(wrong)} of {len(checked)} strings differ, first: {wrong[0]}"
    if name != "chatglm3":  # (its ids_no_special were taken without the role tokens recognised)
        for case in checked:
            assert tokenizer.encode(case["text"], add_special_tokens=False) == case["ids_no_special"]
    if name == "chatglm3":
        gmask, sop, user = (tokenizer.convert_tokens_to_ids(t) for t in ("[gMASK]", "sop", "<|user|>"))
        assert tokenizer.encode("<|user|>\n hi")[:3] == [gmask, sop, user]
        assert tokenizer.encode("[gMASK]sop<|user|>", add_special_tokens=False) == [gmask, sop, user]


def test_internlm_real_vocabulary_matches_the_hub_class(tmp_path):
    """InternLM's real 103,168-piece SentencePiece model (shared/): the derived tokenizer.json encodes every
    test string as the hub's InternLMTokenizer did."""
    from xtune.models.legacy import legacy_tokenizer

    model = shared_path("reference", "tokenizers", "internlm1_sentencepiece", "V7_sft.model")
    record = json.loads((ASSETS / "tokenizer_golden" / "internlm_v7_sft.json").read_text(encoding="utf-8"))
    folder = tmp_path / "internlm"
    folder.mkdir()
    shutil.copy(model, folder / "tokenizer.model")
    config = {"tokenizer_class": "InternLMTokenizer", "add_bos_token": True, "add_eos_token": False,
              "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = legacy_tokenizer(str(folder), registry=get_registry())
    assert len(tokenizer) == record["len_tokenizer"]
    cases = record["tokenizer"]
    wrong = [(c["text"], tokenizer.encode(c["text"]), c["ids"]) for c in cases
             if tokenizer.encode(c["text"]) != c["ids"]]
    assert not wrong, f"{len(wrong)} of {len(cases)} strings differ, first: {wrong[0]}"
