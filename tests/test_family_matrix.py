"""Every model family of the registry, end to end on a tiny random model of its exact architecture.

For each row of tests/family_configs.py: a random 2-layer model built from the family's (shrunk) hub
config.json with a tiny byte-level BPE tokenizer carrying the family's chat-template special tokens, then
through the CLI, in process, with one of the family's generated recipes:

    xtune train RECIPE (3 LoRA steps, finite loss) -> xtune convert pth_to_hf (PEFT adapter)
    -> xtune convert merge (= base + adapter) -> xtune chat MERGED --prompt hi (the family's template)
    -> xtune convert hf_to_gguf (where xtune writes the architecture; else refused by name)

A step xtune refuses is asserted to be refused with an `Error:` line saying why (TinyFamily.refused).
Legacy hub-code families join when tests/assets/legacy/<name>/ exists; vision-language families are
listed and pointed at tests/test_vlm_train.py, which runs them, and their GGUF refusal is checked here.
The outcome of every step is collected; `python tools/family_table.py` runs this module and prints the
family x step table of docs/recipes.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from family_configs import FAMILIES, LEGACY, LEGACY_PENDING, VISION_COMPONENTS, VLM, TinyFamily
from test_engine_fixtures import WORDS, write_alpaca

from xtune.cli.main import main
from xtune.plugins import get_registry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
LEGACY_ASSETS = REPO / "tests" / "assets" / "legacy"
STEPS = ("train", "pth_to_hf", "merge", "chat", "gguf")
RESULTS_ENV = "XTUNE_FAMILY_RESULTS"  # where the collected outcomes are written (tools/family_table.py)
RESULTS: dict[str, dict] = {}
LEGACY_NOTE = "hub-code family: a tiny checkpoint in the hub's layout, loaded natively by xtune"
CONVERSATION = [{"role": "user", "content": "write the cat"}, {"role": "assistant", "content": "the cat sat"},
                {"role": "user", "content": "hi"}]


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def collected():
    """The outcomes of this module's rows, written to $XTUNE_FAMILY_RESULTS (JSON) at the end."""
    yield RESULTS
    target = os.environ.get(RESULTS_ENV)
    if target:
        Path(target).write_text(json.dumps(RESULTS, indent=1, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def bpe() -> str:
    """A byte-level BPE (400 tokens) trained once on the alpaca words and every template's rendering of a
    conversation (so a system header such as Llama-3.1's fits a 64-token row); each family adds its own
    special tokens to a copy."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from xtune.templates import render_prompt

    rendered = [render_prompt(t, CONVERSATION, None, registry=get_registry())
                for t in sorted({recipe_template(f) for f in FAMILIES})]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(WORDS)] * 4 + rendered * 2, trainer)
    return tok.to_str()


@pytest.fixture(scope="module")
def alpaca(tmp_path_factory) -> Path:
    return write_alpaca(tmp_path_factory.mktemp("data") / "alpaca.json")


# ------------------------------------------------------------------------------------------- building
def recipe_template(fam: TinyFamily) -> str:
    """The chat template the row trains with: the recipe's, unless the row's options switch it."""
    for option in fam.options:
        if option.startswith("prompt_template="):
            return option.split("=", 1)[1]
    from xtune.plugins import get_registry

    return get_registry().recipes.get(fam.recipe).template


def build_tokenizer(fam: TinyFamily, bpe: str, folder: Path):
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(bpe)
    named = [t for t in fam.tokens.values() if t]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in dict.fromkeys([*fam.specials, *named])])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in fam.added])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in fam.tokens.items() if v})
    if fam.chat_template:
        from xtune.templates.export import export_jinja

        fast.chat_template = export_jinja(recipe_template(fam), registry=get_registry())
    fast.save_pretrained(folder)
    return fast


def hub_config(fam: TinyFamily, tokenizer) -> dict:
    """The row's config.json with token strings turned into the tiny vocabulary's ids."""
    def ids(value):
        if isinstance(value, list):
            return [ids(v) for v in value]
        return None if value is None else tokenizer.convert_tokens_to_ids(value)

    config = {k: ids(v) if k.endswith("_token_id") else v for k, v in fam.config.items()}
    return dict(config, vocab_size=len(tokenizer), torch_dtype="float32", use_cache=True)


def build_model(fam: TinyFamily, bpe: str, folder: Path) -> Path:
    """The tiny base folder: tokenizer, random weights and the hub-style config.json they were built from
    (rewritten after saving, so xtune reads the hub file's spelling, not transformers' re-serialisation)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True)
    tokenizer = build_tokenizer(fam, bpe, folder)
    config = hub_config(fam, tokenizer)
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    if "train" in fam.refused and not fam.workaround:
        return folder  # transformers cannot build it: the config alone is what xtune gets to refuse
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------- steps
def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    return lines[-1] if lines else (err.strip().splitlines() or ["(no output)"])[-1]


def new_row(row_id: str, fam_or_family, recipe: str = "", hub_id: str = "", note: str = "") -> dict:
    """The collected outcome of one row: {step: outcome} and {step: seconds}."""
    if isinstance(fam_or_family, TinyFamily):
        fam = fam_or_family
        family, recipe, hub_id, note = fam.family, fam.recipe, fam.hub_id, fam.note
    else:
        family = fam_or_family
    RESULTS[row_id] = {"family": family, "recipe": recipe, "hub_id": hub_id, "note": note, "steps": {},
                       "seconds": {}}
    return RESULTS[row_id]


@contextmanager
def step(row: dict, name: str):
    """Record step `name` of `row` as passed (unless the body recorded a refusal), or as FAILED with the
    error's first line (then re-raise), and its wall time."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, pytest.skip.Exception):
            text = str(exc).strip().splitlines()
            row["steps"][name] = f"FAILED: {type(exc).__name__}: {text[0][:200] if text else ''}"
        raise
    finally:
        row["seconds"][name] = round(time.perf_counter() - start, 2)
    row["steps"].setdefault(name, "pass")


def cli(capsys, *args) -> tuple[int, str]:
    """`xtune ARGS` in this process: (exit code, what it wrote to stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def refusal(code: int, err: str, why: str, *paths: Path) -> str:
    """The Error line of a step that must be refused: a non-zero exit and an Error line holding `why`
    (returned without the temporary `paths`, for the table)."""
    line = _error_line(err)
    assert code != 0 and line.startswith("Error:") and why in line, (code, err[-2000:])
    line = line.removeprefix("Error:").removesuffix("(run with --debug for the traceback)").strip()
    for path in paths:
        line = line.replace(str(path), path.name.upper())
    return line


def options(base: Path, data: Path, fam: TinyFamily) -> list[str]:
    values = dict(pretrained_model_name_or_path=base, data_path=data, max_length=64, batch_size=1,
                  accumulative_counts=1, max_steps=3, save_steps=3, save_total_limit=1,
                  evaluation_inputs="[]", export_hf=False, log_interval=1, lr=1e-3, warmup_ratio=0.0, seed=0)
    return [f"{k}={v}" for k, v in values.items()] + list(fam.options)


def check_prompt_tokenizes(fam: TinyFamily, base: Path, template: str) -> None:
    """The template's rendering of a conversation, tokenized by the tiny tokenizer: every special or added
    token of the row that the prompt holds is one id, as with the real tokenizer."""
    from transformers import AutoTokenizer

    from xtune.templates import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(base)
    prompt = render_prompt(template, CONVERSATION, tokenizer, registry=get_registry())
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for token in (*fam.specials, *fam.added):
        if token in prompt:
            single = tokenizer.encode(token, add_special_tokens=False)
            assert len(single) == 1 and single[0] in ids, (token, prompt)


def saved_chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")


def check_merged_is_base_plus_adapter(base: Path, adapter: Path, merged: Path, legacy: bool) -> None:
    """The merged model's logits are the base's with the adapter on (plain transformers + peft; a legacy
    hub-layout base through xtune's loader, which converts it)."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)(input_ids=ids).logits
        if legacy:
            from xtune.models.build import load_for_inference

            ref = load_for_inference(str(base), registry=get_registry(), adapter=str(adapter),
                                     dtype="float32")[0]
        else:
            from peft import PeftModel

            ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                            str(adapter))
        assert (got - ref(input_ids=ids).logits).abs().max().item() < 1e-4


def run_row(fam: TinyFamily, base: Path, alpaca: Path, root: Path, capsys, *, legacy: bool = False) -> None:
    """train -> pth_to_hf -> merge -> chat -> hf_to_gguf on `base`, each outcome recorded."""
    from xtune.export.gguf_arch import ARCHITECTURES

    row = new_row(fam.id, fam)
    record = row["steps"]
    template = recipe_template(fam)
    opts = options(base, alpaca, fam)
    wd, adapter, merged = root / "wd", root / "adapter", root / "merged"

    with step(row, "train"):
        code, err = cli(capsys, "train", fam.recipe, "--work-dir", wd, "--cfg-options", *opts)
        if "train" in fam.refused:
            why = refusal(code, err, fam.refused["train"], base)
            record["train"] = f"refused: {why}"
            if not fam.workaround:
                record.update({s: "not reached (train refused)" for s in STEPS[1:]})
                return
            opts += list(fam.workaround)
            code, err = cli(capsys, "train", fam.recipe, "--work-dir", wd, "--cfg-options", *opts)
            record["train"] = f"pass with {' '.join(fam.workaround)}; as generated, refused: {why}"
        assert code == 0, err[-3000:]
        losses = [h["loss"] for h in json.loads((wd / "loss_history.json").read_text())["train"]]
        assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses

    with step(row, "pth_to_hf"):
        code, err = cli(capsys, "convert", "pth_to_hf", fam.recipe, wd / "iter_3.pth", adapter,
                        "--cfg-options", *opts)
        assert code == 0, err[-3000:]
        from safetensors.torch import load_file

        tensors = load_file(adapter / "adapter_model.safetensors")
        assert (adapter / "adapter_config.json").is_file()
        assert any("lora_B" in k and v.abs().max() > 0 for k, v in tensors.items())  # trained, not zero

    with step(row, "merge"):
        code, err = cli(capsys, "convert", "merge", base, adapter, merged, "--dtype", "float32")
        assert code == 0, err[-3000:]
        check_merged_is_base_plus_adapter(base, adapter, merged, legacy)

    with step(row, "chat"):
        from xtune.templates.export import find_template_name

        assert find_template_name(saved_chat_template(merged), registry=get_registry()) == template
        code, err = cli(capsys, "chat", merged, "--prompt", "hi", "--max-new-tokens", "4",
                        "--temperature", "0", "--no-stream")
        assert code == 0, err[-2000:]

    with step(row, "gguf"):
        out = root / "model.gguf"
        code, err = cli(capsys, "convert", "hf_to_gguf", merged, out, "--outtype", "f32")
        model_type = json.loads((merged / "config.json").read_text())["model_type"]
        if "gguf" in fam.refused:
            record["gguf"] = "refused: " + refusal(code, err, fam.refused["gguf"], merged)
        elif model_type not in ARCHITECTURES:
            record["gguf"] = "refused: " + refusal(code, err, f"architecture {model_type!r}", merged)
        else:
            assert code == 0 and out.stat().st_size > 0, err[-2000:]


def check_low_memory_optimizers(fam: TinyFamily, base: Path) -> None:
    """The low-memory methods find what they need in the family's model (BAdam / LISA its decoder layers
    through the model adapter's layers_path, GaLore / APOLLO its projections), and one step of each of
    LISA and GaLore changes the weights (the full runs are in tests/test_lowmem_train.py)."""
    import torch
    from transformers import AutoModelForCausalLM

    from xtune.methods.badam import decoder_layers
    from xtune.registry import import_object

    registry = get_registry()
    adapter = registry.model_adapters.get(fam.family)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    prefix, count = decoder_layers(model, adapter)
    assert count == 2 and any(n.startswith(f"{prefix}.1.") for n, _ in model.named_parameters())
    ids = torch.tensor([[5, 17, 42, 99, 7, 11]])
    for method, settings in (("lisa", {"activated_layers": 1}), ("galore", {"rank": 2})):
        entry = registry.tuning_methods.get(method)
        settings = {**dict(entry.defaults), **settings}
        import_object(entry.builder)(model, settings, adapter)
        optimizer = import_object(entry.optimizer)(model, {"lr": 1e-2}, settings, adapter)
        before = [p.detach().clone() for p in model.parameters()]
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)), method


# ------------------------------------------------------------------------------------------- the matrix
@pytest.mark.parametrize("fam", FAMILIES, ids=[f.id for f in FAMILIES])
def test_family(fam, bpe, alpaca, tmp_path, capsys):
    base = build_model(fam, bpe, tmp_path / "base")
    if "train" not in fam.refused or fam.workaround:
        check_prompt_tokenizes(fam, base, recipe_template(fam))
    run_row(fam, base, alpaca, tmp_path, capsys)
    if "train" not in fam.refused:
        check_low_memory_optimizers(fam, base)


@pytest.mark.parametrize("row_id", list(LEGACY))
def test_legacy_family(row_id, alpaca, tmp_path, capsys):
    """A hub-code family on its tiny checkpoint in the hub's layout (tests/assets/legacy/FOLDER)."""
    row = LEGACY[row_id]
    fam = TinyFamily(row_id, row["family"], row["recipe"], row["hub_id"], config={}, tokens={},
                     refused=row.get("refused", {}), note=LEGACY_NOTE)
    folder = LEGACY_ASSETS / row["folder"]
    if not (folder / "config.json").is_file():
        new_row(row_id, fam)["steps"].update({s: f"skipped: {LEGACY_PENDING}" for s in STEPS})
        pytest.skip(LEGACY_PENDING)
    run_row(fam, folder, alpaca, tmp_path, capsys, legacy=True)


@pytest.mark.parametrize("name", sorted(VLM))
def test_vlm_family_is_proven_elsewhere_and_refused_as_gguf(name, tmp_path, capsys):
    """Listed, pointed at the test that trains / merges / chats it, and refused by hf_to_gguf by name."""
    from transformers import AutoConfig

    from xtune.plugins import get_registry

    recipe, proof = VLM[name]
    test_file, test_name = proof.split(" ")[0].split("::")
    source = (REPO / test_file).read_text(encoding="utf-8")
    assert f"def {test_name}(" in source and recipe in source
    row = new_row(name, name, recipe, note="vision-language")
    record = row["steps"]
    record.update({s: f"see {proof}" for s in STEPS[:-1]})
    with step(row, "gguf"):
        model_type = get_registry().model_adapters.get(name).model_types[0]
        AutoConfig.for_model(model_type).save_pretrained(tmp_path / "vlm")  # the config alone is refused
        code, err = cli(capsys, "convert", "hf_to_gguf", tmp_path / "vlm", tmp_path / "x.gguf")
        record["gguf"] = "refused: " + refusal(code, err, f"architecture {model_type!r}")


@pytest.mark.parametrize("name", sorted(VISION_COMPONENTS))
def test_vision_encoder_family_is_a_component(name):
    from xtune.plugins import get_registry

    assert get_registry().model_adapters.get(name).model_kind == "vision"
    new_row(name, name, note="vision encoder")["steps"].update(
        {s: f"component: {VISION_COMPONENTS[name]}" for s in STEPS})


def test_every_registry_family_is_in_the_matrix():
    """A family added to models.json / models_vlm.json without a row here fails this test."""
    from xtune.default_plugins.models import _catalogue
    from xtune.plugins import get_registry

    families = {row["name"] for row in _catalogue()["families"]}
    legacy = {row["family"] for row in LEGACY.values()}
    listed = {f.family for f in FAMILIES} | legacy | set(VLM) | set(VISION_COMPONENTS)
    assert families <= listed, sorted(families - listed)
    assert listed - legacy <= families, sorted(listed - legacy - families)  # legacy rows may come first
    recipes = get_registry().recipes
    assert all(row["recipe"] in recipes for row in LEGACY.values() if row["family"] in families)
    assert all(f.recipe in recipes for f in FAMILIES)
    assert all(recipes.get(f.recipe).family == f.family for f in FAMILIES if not f.options)
