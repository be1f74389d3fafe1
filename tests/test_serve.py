"""`xtune serve`, talked to with the official `openai` client, as a user's program would.

The tiny model of test_export_helpers is served by `xtune serve` in a subprocess on 127.0.0.1 (a free port,
`--port 0`, read from the line the server prints when ready), once for the module; a second server with a
queue of one request shows the 503. Every wait is bounded and both servers are always terminated. The
requests: whole and streamed answers, /v1/completions, stop words, seeds, the greedy answer against
`xtune chat --temperature 0` on the same conversation, the 400s / 401 / 503, and 50 concurrent requests
(bounded in count and time) that must each get the answer their prompt gets alone. The refusals of the
command line itself (an address beyond this machine without a key, vLLM missing, a taken port) come
before any model loads and run in-process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_export_helpers import tiny_model_dir

from xtune.cli.main import main

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "test-key"
NAME = "tiny"
START_TIMEOUT_S = 300  # a loaded machine imports torch slowly (an idle one starts in ~10 s)
REQUEST_TIMEOUT_S = 60


class Server:
    """`xtune serve` in a subprocess; `url` once it has printed its ready line."""

    def __init__(self, model_dir, *args: str):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", XTUNE_API_KEY="")
        self.proc = subprocess.Popen([sys.executable, "-m", "xtune", "serve", str(model_dir), "--port", "0",
                                      "--model-name", NAME, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if "http://" in line:
                self.ready.set()
        self.ready.set()  # ended: wait() sees it has no URL

    def wait(self) -> str:
        if not self.ready.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            pytest.fail("xtune serve did not start:\n" + "".join(self.lines[-20:]))
        line = next(line for line in self.lines if "http://" in line)
        self.url = line.split("http://", 1)[1].split("/v1", 1)[0]
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def servers(model_dir):
    """The main server (API key, batches of 8) and a small one (a queue of 1, no batching), started
    together; both terminated at the end."""
    main_server = Server(model_dir, "--api-key", KEY, "--max-batch", "8", "--max-queue", "64")
    small = Server(model_dir, "--max-queue", "1", "--max-batch", "1")
    try:
        main_server.wait()
        small.wait()
        yield main_server, small
    finally:
        main_server.stop()
        small.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://{server.url}/v1", api_key=KEY, max_retries=0,
                         timeout=REQUEST_TIMEOUT_S)


def _chat(client, content: str, **kwargs):
    messages = kwargs.pop("messages", None) or [{"role": "user", "content": content}]
    kwargs.setdefault("temperature", 0)
    kwargs.setdefault("max_tokens", 12)
    return client.chat.completions.create(model=NAME, messages=messages, **kwargs)


def _post(server, path: str, data: bytes, key: str | None = KEY) -> tuple[int, dict, object]:
    """(status, JSON body, headers: any case) of a raw POST: what the openai client would never send."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"http://{server.url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), exc.headers


# ---------------------------------------------------------------------------------------- answers
@pytest.mark.integration
def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [NAME]


@pytest.mark.integration
def test_a_chat_answer_whole_and_streamed_is_the_same(client):
    whole = _chat(client, "Hello")
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 0 and 0 < whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(_chat(client, "Hello", stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


@pytest.mark.integration
def test_greedy_answer_equals_xtune_chat(client, model_dir, capsys):
    import torch

    system, prompt = "Be brief.", "Who are you?"
    served = _chat(client, prompt, max_tokens=20, messages=[{"role": "system", "content": system},
                                                              {"role": "user", "content": prompt}])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server runs (OMP_NUM_THREADS=1): the same arithmetic
    try:
        assert main(["chat", str(model_dir), "--system", system, "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", "20", "--no-stream"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out == served.choices[0].message.content + "\n"


@pytest.mark.integration
def test_completions_whole_streamed_and_several_prompts(client):
    whole = client.completions.create(model=NAME, prompt="The capital of France", max_tokens=8,
                                      temperature=0)
    assert whole.object == "text_completion" and whole.usage.completion_tokens <= 8
    streamed = client.completions.create(model=NAME, prompt="The capital of France", max_tokens=8,
                                         temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    both = client.completions.create(model=NAME, prompt=["The capital of France", "Hello"], max_tokens=8,
                                     temperature=0)
    assert [c.index for c in both.choices] == [0, 1] and both.choices[0].text == whole.choices[0].text


@pytest.mark.integration
def test_a_stop_word_cuts_the_answer(client):
    full = client.completions.create(model=NAME, prompt="Tell me a joke", max_tokens=12, temperature=0)
    text = full.choices[0].text
    stop = next(text[i:i + 2] for i in range(2, len(text) - 1) if text[i:i + 2].strip())
    cut = client.completions.create(model=NAME, prompt="Tell me a joke", max_tokens=12, temperature=0,
                                    stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"


@pytest.mark.integration
def test_a_seed_repeats_a_sampled_answer(client):
    answers = {_chat(client, "Hello", temperature=1.0, seed=7).choices[0].message.content for _ in range(2)}
    assert len(answers) == 1


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.integration
@pytest.mark.parametrize("kwargs, expect", [
    ({"model": "gpt-4"}, "model 'gpt-4' is not served here"),
    ({"temperature": 5}, "temperature must be a number in [0, 2]"),
    ({"top_p": 0}, "top_p must be a number in (0, 1]"),
    ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
    ({"n": 2}, "n=2 is not supported"),
    ({"stop": [""]}, "stop must be a non-empty string"),
    ({"extra_body": {"colour": "blue"}}, "unrecognized request argument(s): colour"),
    ({"max_tokens": 1000}, "exceed it: lower max_tokens"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role must be one of"),
    ({"messages": [{"role": "user", "content": "x " * 400}]}, "this model's context is 256 tokens"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
     "the image cannot be read"),
])
def test_bad_requests_get_400_with_a_message(client, kwargs, expect):
    kwargs = {"model": NAME, "messages": [{"role": "user", "content": "Hello"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**kwargs)
    assert info.value.status_code == 400 and expect in info.value.message


@pytest.mark.integration
def test_malformed_json_and_missing_or_wrong_keys(server, client):
    status, body, _ = _post(server, "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body, _ = _post(server, "/v1/chat/completions", b"{}", key=None)
    assert status == 401 and "no API key" in body["error"]["message"]
    wrong = openai.OpenAI(base_url=f"http://{server.url}/v1", api_key="not-the-key", max_retries=0,
                          timeout=REQUEST_TIMEOUT_S)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    status, body, _ = _post(server, "/v1/nowhere", b"{}")
    assert status == 404 and body["error"]["code"] == "not_found"


@pytest.mark.integration
def test_a_full_queue_answers_503_with_retry_after(servers):
    small = servers[1]
    # 150 tokens (the tiny model's greedy answer to "Hello" runs to the limit): the first request is still
    # generating when the other eleven arrive together, so one waits and the rest find the queue full
    data = json.dumps({"model": NAME, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 150,
                       "temperature": 0}).encode()
    start = threading.Barrier(12)

    def send(_):
        start.wait(timeout=REQUEST_TIMEOUT_S)
        return _post(small, "/v1/chat/completions", data, key=None)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, range(12), timeout=REQUEST_TIMEOUT_S))
    busy = [r for r in results if r[0] == 503]
    assert busy and {r[0] for r in results} == {200, 503}
    assert all(r[2].get("Retry-After") == "1" and r[1]["error"]["code"] == "queue_full" for r in busy)
    assert _post(small, "/v1/chat/completions", data, key=None)[0] == 200  # and it goes on


# ---------------------------------------------------------------------------------------- load
@pytest.mark.integration
def test_50_concurrent_requests_are_batched_and_each_answered_right(server, client):
    prompts = [f"Question {i}: tell me about {topic}" for i, topic in enumerate(
        ["Paris", "cats", "xtune", "jokes", "numbers", "models", "recipes", "France", "help", "you"])]
    alone = {p: _chat(client, p, max_tokens=8).choices[0].message.content for p in prompts}
    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda p: (p, _chat(client, p, max_tokens=8).choices[0].message.content),
                                prompts * 5, timeout=120))
    assert time.monotonic() - started < 120
    assert len(answers) == 50 and all(answer == alone[p] for p, answer in answers)
    with urllib.request.urlopen(f"http://{server.url}/health", timeout=REQUEST_TIMEOUT_S) as response:
        health = json.load(response)
    assert health["largest_batch"] > 1 and health["waiting"] == 0


# ---------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize("args, expect", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 lets other machines in: set --api-key"),
    (["--max-queue", "0"], "--max-queue 0: must be at least 1"),
    (["--prompt-template", "chatmlx"], "unknown chat template 'chatmlx'"),
])
def test_bad_serve_command_lines_exit_2_before_loading(tmp_path, args, expect, capsys, monkeypatch):
    monkeypatch.delenv("XTUNE_API_KEY", raising=False)
    assert main(["serve", str(tmp_path / "not-loaded"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and expect in err[0]


def test_vllm_missing_is_one_line(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    assert main(["serve", str(tmp_path), "--backend", "vllm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backend vllm: vLLM is not installed" in err[0]


def test_a_taken_port_is_refused_before_loading(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path / "not-loaded"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]


# ---------------------------------------------------------------------------------------- images
@pytest.mark.integration
def test_an_image_part_is_seen_as_xtune_chat_sees_it(tmp_path):
    """A tiny Qwen2-VL served in-process (uvicorn on a thread): an image_url part gets the answer that
    `xtune chat --image` (its VisionChatSession) gives the same picture and text."""
    import base64

    import uvicorn
    from test_vlm_fixtures import draw, make_qwen2_vl

    from xtune.chat.session import GenerationSettings
    from xtune.chat.vision import VisionChatSession
    from xtune.models.build import load_for_inference
    from xtune.plugins import get_registry
    from xtune.serve.app import create_app
    from xtune.serve.jobs import ServeState
    from xtune.serve.worker import TransformersBackend, Worker

    folder = make_qwen2_vl(tmp_path / "qwen2_vl")
    picture = tmp_path / "red.png"
    draw("red", "circle").save(picture)
    registry = get_registry()
    model, processor = load_for_inference(str(folder), registry=registry)
    chat = VisionChatSession(model, processor, registry=registry,
                             settings=GenerationSettings(max_new_tokens=6, temperature=0))
    chat.add_image(str(picture))
    expected = chat.ask("What is it?")  # the text after chat's "<image>\n"
    assert expected  # (the tiny model says something: the comparison below is not between two blanks)

    session = VisionChatSession(model, processor, registry=registry)
    worker = Worker(TransformersBackend(model, processor, session))
    state = ServeState(model_name=NAME, backend=worker.backend, worker=worker)
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="none",
                               max_retries=0, timeout=REQUEST_TIMEOUT_S)
        url = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
        answer = client.chat.completions.create(model=NAME, max_tokens=6, temperature=0, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "\nWhat is it?"}]}])
        assert answer.choices[0].message.content == expected
        with pytest.raises(openai.BadRequestError, match="only data: URLs are read"):
            client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        worker.close()
        sock.close()
