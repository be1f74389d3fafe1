"""`xtune webui` in a real browser: Playwright (PyPI) driving Debian's Chromium, headless, against the page
served by `xtune webui` in a subprocess on 127.0.0.1 (a free port, read from the line it prints when ready).

One end-to-end path (pick the tiny model, a recipe and data, 3 steps, Start, wait for the loss curve and
the finished state, chat with base and tuned side by side, merge) plus the estimate updating as a setting
changes, a bad data file's `Error:` lines, Stop saving a checkpoint, and the refusal to listen beyond this
machine without a login. Skipped with a reason where Chromium or Playwright is missing, unless
XTUNE_REQUIRE_BROWSER=1 (CI sets it): then a missing browser fails. With XTUNE_WEBUI_SCREENSHOTS=1 the
test writes docs/images/webui_*.png (the pictures in docs/webui.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_engine_fixtures import make_assets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
RECIPE = "llama2_7b_lora_alpaca_e3"
SCREENSHOTS = os.environ.get("XTUNE_WEBUI_SCREENSHOTS") == "1"
START_TIMEOUT_S = 180
RUN_TIMEOUT_MS = 240_000


def _need_browser():
    """Playwright, gradio and a Chromium binary, or a skip (a failure where CI requires them)."""
    import importlib.util

    missing = [m for m in ("playwright", "gradio") if importlib.util.find_spec(m) is None]
    if not os.path.exists(CHROMIUM):
        missing.append(f"chromium ({CHROMIUM}; apt-get install -y chromium)")
    if missing:
        message = f"browser tests need {', '.join(missing)}"
        if os.environ.get("XTUNE_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (XTUNE_REQUIRE_BROWSER=1)")
        pytest.skip(message)


class WebUI:
    """`xtune webui --port 0` in a subprocess, its URL read from its ready line; stopped with SIGTERM."""

    def __init__(self, root: Path):
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xtune", "webui", "--port", "0", "--root", str(root)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(START_TIMEOUT_S):
            self.stop()
            pytest.fail("xtune webui did not start:\n" + "".join(self.lines[-20:]))
        self.url = re.search(r"http://127\.0\.0\.1:\d+/", self.lines[-1]).group(0)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("xtune webui: http"):
                self.ready.set()
        self.ready.set()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    _need_browser()
    root = tmp_path_factory.mktemp("webui")
    make_assets(root)
    (root / "bad.jsonl").write_text(
        '{"instruction": "hi", "output": "yo"}\n{"instruction": 5, "output": "x"}\n'
        '{"output": "no instruction"}\n{"instruction": "a", "output": "b"}\n'
    )
    return root


@pytest.fixture(scope="module")
def server(root):
    ui = WebUI(root)
    yield ui
    ui.stop()


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(server.url)
    page.wait_for_selector("#recipe input")
    yield page
    page.close()


def choose(page, elem: str, text: str) -> None:
    """Pick `text` in a Gradio dropdown: type to filter (key by key, as a person types: Gradio filters its
    options on key events and shows at most 100 of them), click the option."""
    box = page.locator(f"#{elem} input")
    box.click()
    box.fill("")
    box.press_sequentially(text)
    page.locator(f'#{elem} li[role=option][aria-label="{text}"]').click()


def fill(page, elem: str, value) -> None:
    box = page.locator(f"#{elem} input, #{elem} textarea").first
    box.fill(str(value))
    box.press("Tab")


def set_up_run(page, steps: int) -> None:
    """The Train tab filled in as a person would: model, recipe (searched), data, small settings."""
    choose(page, "model", "tiny_llama")
    fill(page, "search", "llama2_7b_lora_alpaca")
    choose(page, "recipe", RECIPE)
    choose(page, "data", "alpaca.json")
    page.wait_for_function("document.querySelector('#data_format input').value == 'alpaca'")
    for elem, value in (
        ("max_steps", steps),
        ("max_length", 128),
        ("accumulative_counts", 1),
        ("extra", "evaluation_inputs=[]"),
    ):  # no sample chats before and after: seconds
        fill(page, elem, value)
    page.wait_for_function(f"document.querySelector('#command').innerText.includes('max_steps={steps}')")


def wait_text(page, elem: str, text: str, timeout: float = 30_000) -> None:
    """Wait until #elem shows `text`; on timeout, fail with what the page shows instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "([e, t]) => (document.querySelector('#' + e)?.innerText || '').includes(t)",
            arg=[elem, text],
            timeout=timeout,
        )
    except PlaywrightTimeout:
        shown = {e: page.locator(f"#{e}").inner_text()[-1500:] for e in (elem, "run_status", "log_tail")}
        pytest.fail(f"#{elem} never showed {text!r} in {timeout / 1000:.0f} s; the page shows: {shown}")


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(REPO / "docs" / "images" / f"webui_{name}.png"), full_page=True)


def test_train_watch_chat_and_merge_end_to_end(page, root):
    set_up_run(page, steps=3)
    page.click("#preview")  # `xtune log-dataset` with the page's settings: trained spans highlighted
    wait_text(page, "samples", "samples kept", 120_000)
    assert page.locator("#samples").get_by_text("trained").count() >= 1
    command = page.inner_text("#command")
    assert (
        f"xtune train {RECIPE}" in command
        and f"pretrained_model_name_or_path={root / 'tiny_llama'}" in command
    )
    page.click("#start")
    wait_text(page, "run_status", "finished", RUN_TIMEOUT_MS)
    wait_text(page, "run_status", "step 3/3")
    page.wait_for_selector("#loss_plot svg")
    # the curve is drawn: its legend names the series (a plot first fed no points keeps its axes
    # but draws no line and no legend entry)
    page.wait_for_function("document.querySelector('#loss_plot').innerText.split('\\n').includes('loss')")
    assert "saved checkpoint" in page.input_value("#log_tail textarea")
    run = page.locator("#run input").input_value()
    work_dir = root / run
    assert (work_dir / "hf" / "adapter_config.json").is_file() and (work_dir / "iter_3.pth").exists()
    meta = json.loads((work_dir / "webui" / "run.json").read_text())
    assert meta["exit_code"] == 0 and "max_steps=3" in meta["spec"]["options"]
    assert (work_dir / "webui" / f"{RECIPE}.py").is_file()  # the recipe copy the process trained
    shot(page, "train")

    page.get_by_role("tab", name="Chat").click()
    choose(page, "chat_model", "tiny_llama")
    choose(page, "chat_adapter", f"{run}/hf")
    page.check("#compare input")
    fill(page, "max_new_tokens", 6)
    fill(page, "temperature", 0)
    page.click("#chat_load")
    wait_text(page, "chat_status", "loaded", 120_000)
    fill(page, "chat_message", "write the cat")
    page.click("#chat_send")
    for column in ("chat_base", "chat_tuned"):
        page.wait_for_function(
            "c => document.querySelectorAll('#' + c + ' .message-row, #' + c + ' .message').length >= 2",
            arg=column,
            timeout=60_000,
        )
        assert "write the cat" in page.inner_text(f"#{column}")
    shot(page, "chat")

    page.get_by_role("tab", name="Export").click()
    fill(page, "merge_base", "tiny_llama")
    fill(page, "merge_adapter", f"{run}/hf")
    fill(page, "merge_out", "merged")
    page.click("#export_merge")
    page.wait_for_function(
        "document.querySelector('#export_log textarea').value.includes('[exit ')", timeout=RUN_TIMEOUT_MS
    )
    assert "[exit 0]" in page.input_value("#export_log textarea"), page.input_value("#export_log textarea")
    assert "wrote" in page.input_value("#export_log textarea")
    merged = root / "merged"
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    shot(page, "export")


def test_the_estimate_follows_the_settings(page):
    choose(page, "model", "llama2_7b")  # a registered model: its figures come from the registry
    fill(page, "search", "lora_alpaca")
    choose(page, "recipe", RECIPE)
    wait_text(page, "estimate", "6.74 B parameters", 90_000)

    def peak() -> float:
        return float(re.search(r"peak\s+([\d.]+)", page.inner_text("#estimate")).group(1))

    before = peak()
    fill(page, "max_length", 8192)
    page.wait_for_function("document.querySelector('#command').innerText.includes('max_length=8192')")
    deadline = time.time() + 20
    while peak() == before and time.time() < deadline:
        time.sleep(0.2)
    assert peak() > before


def test_a_bad_data_file_shows_each_error_line(page):
    page.get_by_role("tab", name="Data").click()
    choose(page, "check_file", "bad.jsonl")
    choose(page, "check_format", "alpaca")
    page.click("#check")
    wait_text(page, "check_table", "Error:")
    table = page.inner_text("#check_table")
    assert "line 2" in table and "must be a string" in table and "line 3" in table
    result = page.inner_text("#check_result")
    assert "kept: 2" in result and "bad: 2" in result
    shot(page, "data")


def test_stop_saves_a_checkpoint_and_resume_is_offered(page, root):
    set_up_run(page, steps=5000)
    page.click("#start")
    page.wait_for_function(
        "/step [1-9][0-9]*\\/5000/.test(document.querySelector('#run_status').innerText)",
        timeout=RUN_TIMEOUT_MS,
    )  # a step is logged: the loop is training
    page.click("#stop")
    wait_text(page, "run_status", "stopped", 120_000)
    work_dir = root / page.locator("#run input").input_value()
    checkpoint = (work_dir / "last_checkpoint").read_text().strip()
    assert checkpoint.startswith("iter_") and (work_dir / checkpoint).exists()
    assert json.loads((work_dir / "webui" / "run.json").read_text())["exit_code"] in (143, -15)


def test_another_address_without_a_login_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "xtune", "webui", "--host", "0.0.0.0", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --host 0.0.0.0") and "--auth" in lines[0]
