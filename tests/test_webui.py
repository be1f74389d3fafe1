"""`xtune webui` without a browser: path confinement, the train command built from the form, the refusal to
listen beyond this machine without a login, every label in both languages, and reading a run's progress.
Fast: no model, no server (the app build at the end needs gradio and is an integration test)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xtune.cli.main import main
from xtune.errors import UsageError
from xtune.webui import cli_calls, metrics
from xtune.webui.i18n import LABELS, Labeller, text
from xtune.webui.paths import Paths
from xtune.webui.recipes import form_options
from xtune.webui.runs import RunManager, RunSpec, write_meta

WEBUI = Path(__file__).resolve().parent.parent / "xtune" / "webui"
RECIPE = "llama2_7b_lora_alpaca_e3"


def test_paths_stay_under_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)  # a link out of the root is followed, then refused
    paths = Paths(root, extra=[])
    assert paths.local("data/x.json") == root / "data" / "x.json"
    assert paths.local(str(root / "data")) == root / "data"
    for bad in ("../outside", "/etc/passwd", "link/secret", "~/.ssh/id_rsa"):
        with pytest.raises(UsageError, match="outside the folders this page may use"):
            paths.local(bad, "data")
    with pytest.raises(UsageError, match="empty"):
        paths.local("  ")
    assert paths.model_or_hub("Qwen/Qwen2-0.5B-Instruct") == "Qwen/Qwen2-0.5B-Instruct"  # a hub id, no path
    assert paths.model_or_hub("modelscope://qwen/Qwen2") == "modelscope://qwen/Qwen2"
    assert paths.model_or_hub("data") == str(root / "data")
    with pytest.raises(UsageError):
        paths.model_or_hub("/etc")


def test_the_pickers_list_models_adapters_and_data_under_the_root(tmp_path):
    for folder, files in {
        "m": ["config.json", "model.safetensors"],
        "w/hf": ["adapter_config.json"],
        "d": ["a.jsonl", "b.csv"],
        "w/20260101_000000/vis_data": ["scalars.json"],
    }.items():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for name in files:
            (tmp_path / folder / name).write_text("{}")
    paths = Paths(tmp_path, extra=[])
    assert paths.find_models() == ["m"] and paths.find_adapters() == ["w/hf"]
    assert paths.find_data() == ["d/a.jsonl", "d/b.csv"]  # model folders and run logs are not data


def test_the_command_says_exactly_what_runs():
    spec = RunSpec(
        recipe=RECIPE,
        recipe_path="/r.py",
        work_dir="/root/work_dirs/a",
        options=["max_steps=3", "model.quantization={'load_in_8bit': True}"],
        deepspeed="zero2",
        processes=2,
    )
    assert spec.command() == (
        "NPROC_PER_NODE=2 xtune train llama2_7b_lora_alpaca_e3 --work-dir /root/work_dirs/a "
        "--deepspeed zero2 --cfg-options max_steps=3 "
        "'model.quantization={'\"'\"'load_in_8bit'\"'\"': True}'"
    )
    argv = spec.argv("/copy/r.py", resume=True)
    assert argv[:2] == ["train", "/copy/r.py"] and argv.index("--resume") < argv.index("--cfg-options")


def test_only_what_the_form_changes_becomes_an_option():
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe
    from xtune.webui.recipes import recipe_defaults

    defaults = recipe_defaults(load_recipe(resolve_recipe(RECIPE, get_registry())))
    assert defaults["lr"] == 2e-4 and defaults["lora_r"] == 64 and defaults["quantization"] == "none"
    form = {
        **defaults,
        "max_steps": 3,
        "lr": 0.0002,
        "lora_r": 8.0,
        "quantization": "4-bit",
        "model": "/m",
        "data": "",
        "extra": "evaluation_inputs=[] seed=1",
    }
    options = form_options(form, defaults)
    assert options[:4] == [
        "pretrained_model_name_or_path=/m",
        "max_steps=3",
        "log_interval=1",
        "method_cfg.r=8",
    ]
    assert options[4].startswith("model.quantization={'load_in_4bit': True")
    assert options[5:] == ["evaluation_inputs=[]", "seed=1"]
    with pytest.raises(UsageError, match="KEY=VALUE"):
        form_options({**defaults, "objective_settings": "beta"}, defaults)


def test_another_address_needs_a_login(capsys):
    assert main(["webui", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: --host 0.0.0.0 lets other machines in: set --auth")
    assert main(["webui", "--auth", "nopassword"]) == 2
    assert "USER:PASS" in capsys.readouterr().err
    from xtune.cli.webui import check_args

    args = type("Args", (), {"host": "0.0.0.0", "port": 0, "auth": "ada:secret", "root": "."})()
    assert check_args(args) == ("ada", "secret")


def test_without_gradio_it_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a)
    )
    assert main(["webui"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'xtune[webui]'" in err[0]


@pytest.mark.integration  # a fresh interpreter: the only way to see what importing the CLI pulls in
def test_help_imports_no_gradio():
    code = (
        "import sys; from xtune.cli.main import build_parser; build_parser().parse_args(['webui', '--port', "
        "'0']); assert 'gradio' not in sys.modules, 'gradio imported by --help'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_label_has_english_and_chinese():
    assert all(len(pair) == 2 and all(s.strip() for s in pair) for pair in LABELS.values())
    untranslated = [k for k, (en, zh) in LABELS.items() if en == zh and not re.fullmatch(r"[\x00-\x7f]+", en)]
    assert not untranslated
    assert text("start", "zh") == "开始" and text("start", "fr") == "Start"


def test_every_label_the_page_asks_for_exists():
    used = set()
    for path in WEBUI.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"labelled\(\s*ctx,\s*gr\.\w+,\s*\"(\w+)\"", source))
        used |= set(re.findall(r"button\(ctx, \"(\w+)\"", source))
        used |= set(re.findall(r"labels\(\"(\w+)\"\)", source))
    assert len(used) > 60 and used - set(LABELS) == set()
    labels = Labeller("zh")
    labels.bind("component", "stop", "value")
    assert labels.updates("en") == [{"__type__": "update", "value": "Stop (saves a checkpoint)"}]


def test_a_runs_progress_and_state_are_read_from_its_files(tmp_path):
    work_dir = tmp_path / "work_dirs" / "a"
    logs = work_dir / "20260101_000000" / "vis_data"
    logs.mkdir(parents=True)
    rows = [
        {"step": s, "loss": 2.0 - s / 10, "time": 2.0, "lr": 1e-4, "rewards/chosen": 0.1 * s} for s in (1, 2)
    ]
    (logs / "scalars.json").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 3, "lo')
    write_meta(work_dir, {"spec": {}, "pid": None, "exit_code": None})
    (work_dir / "webui" / "console.log").write_text(
        "step 1/10: loss 1.9\r\nstep 2/10: loss 1.8\nError: boom\n"
    )
    found = metrics.scalars(work_dir)
    assert [r["step"] for r in found] == [1, 2]  # the line being written is skipped
    loss, other = metrics.curves(found)
    assert [p["value"] for p in loss] == [1.9, 1.8] and {p["metric"] for p in other} == {"rewards/chosen"}
    assert metrics.progress(work_dir, found) == {"step": 2, "total": 10, "eta_s": 16.0}
    assert metrics.errors(work_dir) == ["Error: boom"] and metrics.format_eta(3725) == "1:02:05"
    runs = RunManager(tmp_path)
    assert runs.state(work_dir) == "failed" and runs.runs() == [work_dir]
    for code, state in ((0, "finished"), (143, "stopped"), (2, "failed")):
        write_meta(work_dir, {"spec": {}, "exit_code": code})
        assert runs.state(work_dir) == state


def test_log_dataset_marks_become_highlighted_spans():
    assert cli_calls.highlight("<s>[INST] hi [/INST][[ yo </s>]]\nnext") == [
        ("<s>[INST] hi [/INST]", None),
        (" yo </s>", "trained"),
        ("\nnext", None),
    ]


@pytest.mark.integration
def test_the_page_builds_and_switches_language(tmp_path):
    pytest.importorskip("gradio")
    from xtune.plugins import get_registry
    from xtune.webui.app import build_app

    app, ctx = build_app(get_registry(), tmp_path, lang="zh")
    assert ctx.labels("tab_train") == "训练" and len(ctx.labels.components()) > 60
    assert {c["props"].get("elem_id") for c in app.get_config_file()["components"]} >= {
        "recipe",
        "estimate",
        "command",
        "start",
        "stop",
        "resume",
        "loss_plot",
        "check_table",
        "chat_base",
        "chat_tuned",
        "export_merge",
    }
