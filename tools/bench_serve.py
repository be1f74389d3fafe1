"""`bench.py serve`: requests/s and latency of `xtune serve` at concurrency 1, 4 and 16, on SmolLM2-135M.

The baseline is what a server without batching would do: the same prompts answered one at a time by
`generate` in this process (greedy, the same `max_tokens`, the prompt rendered by the chat session), its
requests/s and per-request latency measured in the same run, before the server starts and again after
its levels (while it idles), so the two never share the cores and a drift of the machine's load shows;
the server's figures are compared with the mean of the two. `xtune serve` runs in a subprocess on
127.0.0.1 (a free port) and, for each concurrency level C, C client threads send the same greedy requests
over HTTP (the standard library's client, to keep the client's own cost small) until the level's count
is done: requests/s is the count over the wall time, latency the time of each request from send to whole
answer. Completion tokens come from each answer's `usage`, so tokens/s counts what was generated. The
server uses its defaults (batches of at most 8); `--quick` sends fewer requests.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_report

LEVELS = (1, 4, 16)
MAX_TOKENS = 32
PROMPTS = ["What is the capital of France?", "Tell me a joke about cats.", "Who are you?",
           "Name three colours.", "How do I boil an egg?", "What is 12 times 7?", "Say hello in Spanish.",
           "What is a language model?", "Give me a fruit that is yellow.", "Why is the sky blue?",
           "Write one line about the sea.", "What day comes after Monday?", "Name a planet.",
           "What is water made of?", "Recommend a book.", "How many legs does a spider have?"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(latencies: list[float], wall: float, tokens: int, cpu_s: float | None) -> dict:
    return {"requests": len(latencies), "wall_s": wall, "requests_per_s": len(latencies) / wall,
            "tokens_per_s": tokens / wall, "p50_s": statistics.median(latencies),
            "p95_s": _percentile(latencies, 0.95),
            "cpu_s_per_request": None if cpu_s is None else cpu_s / len(latencies)}


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far, from /proc (None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Baseline:
    """One request at a time in this process: render, tokenize, `generate`, decode, as `xtune chat` does."""

    def __init__(self, model_dir: str):
        from xtune.chat.session import ChatSession, GenerationSettings
        from xtune.models.build import load_for_inference
        from xtune.plugins import get_registry

        registry = get_registry()
        self.model, self.tokenizer = load_for_inference(model_dir, registry=registry)
        settings = GenerationSettings(max_new_tokens=MAX_TOKENS, temperature=0)
        self.session = ChatSession(self.model, self.tokenizer, registry=registry, settings=settings,
                                   model_name=model_dir)
        self.session.ask(PROMPTS[0])  # warm-up, unmeasured

    def measure(self, count: int) -> dict:
        latencies, tokens, start, cpu = [], 0, time.perf_counter(), time.process_time()
        for i in range(count):
            begin = time.perf_counter()
            inputs = self.session.model_inputs(self.session.render(
                [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]))
            output = self.model.generate(**inputs, **self.session.generate_kwargs())
            prompt_length = inputs["input_ids"].shape[1]
            self.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)
            latencies.append(time.perf_counter() - begin)
            tokens += int(output.shape[1] - prompt_length)
        return _summary(latencies, time.perf_counter() - start, tokens, time.process_time() - cpu)


class _Server:
    def __init__(self, model_dir: str, out: Path):
        self.log_path = out / "serve.log"
        self.log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        script = Path(sys.executable).with_name("xtune")
        exe = [str(script)] if script.is_file() else [sys.executable, "-m", "xtune"]
        self.proc = subprocess.Popen([*exe, "serve", model_dir, "--port", "0", "--model-name", "bench"],
                                     stdout=subprocess.DEVNULL, stderr=self.log, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, HF_HUB_OFFLINE="1"))

    def wait(self, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            text = self.log_path.read_text(encoding="utf-8")
            if "http://" in text:
                return text.split("http://", 1)[1].split("/v1", 1)[0]
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"xtune serve did not start: {self.log_path.read_text(encoding='utf-8')[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()


def _request(url: str, prompt: str) -> tuple[float, int]:
    data = json.dumps({"model": "bench", "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": MAX_TOKENS, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://{url}/v1/chat/completions", data=data,
                                     headers={"Content-Type": "application/json"})
    begin = time.perf_counter()
    with urllib.request.urlopen(request, timeout=1800) as response:
        body = json.load(response)
    return time.perf_counter() - begin, body["usage"]["completion_tokens"]


def level(url: str, concurrency: int, count: int, pid: int) -> dict:
    """`count` requests from `concurrency` threads, each sending its next request when the last is done."""
    counter, lock = iter(range(count)), threading.Lock()

    def client(_) -> list[tuple[float, int]]:
        done = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return done
            done.append(_request(url, PROMPTS[i % len(PROMPTS)]))

    _request(url, PROMPTS[0])  # warm-up, unmeasured
    start, cpu = time.perf_counter(), _cpu_seconds(pid)
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for part in pool.map(client, range(concurrency)) for r in part]
    wall, cpu_end = time.perf_counter() - start, _cpu_seconds(pid)
    used = None if cpu is None or cpu_end is None else cpu_end - cpu
    return {"concurrency": concurrency,
            **_summary([r[0] for r in results], wall, sum(r[1] for r in results), used)}


def run(quick: bool, out: Path, log) -> dict:
    from bench_train import smollm2_dir

    model = smollm2_dir()
    if model is None:
        raise SystemExit("Error: bench.py serve needs SmolLM2-135M-Instruct (tools/get_smollm2.py)")
    out.mkdir(parents=True, exist_ok=True)
    counts = {1: 4, 4: 8, 16: 16} if quick else {1: 8, 4: 16, 16: 32}
    import torch

    settings = {"model": Path(model).name, "max_tokens": MAX_TOKENS, "greedy": True,
                "requests": [counts[c] for c in LEVELS], "server": "xtune serve defaults (--max-batch 8)",
                "torch_threads": torch.get_num_threads()}  # OMP_NUM_THREADS, inherited by the server too
    result = bench_report.header("serve", settings)
    base = Baseline(str(model))
    result["baseline"] = base.measure(counts[1])  # before the server starts, and again after its levels:
    log(f"baseline (generate, one at a time): {result['baseline']['requests_per_s']:.2f} requests/s")
    server = _Server(str(model), out)  # the two show how much the machine's load drifted meanwhile
    try:
        url = server.wait()
        result["levels"] = []
        for c in LEVELS:
            result["levels"].append(level(url, c, counts[c], server.proc.pid))
            log(f"concurrency {c}: {result['levels'][-1]['requests_per_s']:.2f} requests/s")
        with urllib.request.urlopen(f"http://{url}/health", timeout=60) as response:
            result["server"] = json.load(response)
        result["baseline_after"] = base.measure(counts[1])  # the server idles meanwhile
    finally:
        server.stop()
    return result


def markdown(result: dict) -> str:
    """The table. Requests/s are compared with the mean of the baselines measured before and after; CPU
    seconds per request (the server process's, or this one's for the baseline) with the baselines' mean too:
    on a machine shared with other work, wall time says how busy it was, CPU time what each answer cost."""
    bases = [("`generate`, one request at a time (no server), before", result["baseline"])]
    if result.get("baseline_after"):
        bases.append(("`generate`, one at a time, after the server's levels", result["baseline_after"]))
    rate = statistics.mean(b["requests_per_s"] for _, b in bases)
    cpus = [b.get("cpu_s_per_request") for _, b in bases if b.get("cpu_s_per_request")]
    cpu = statistics.mean(cpus) if cpus else None

    def row(name, c, figures):
        per = figures.get("cpu_s_per_request")
        return [name, c, figures["requests_per_s"], figures["tokens_per_s"], figures["p50_s"],
                figures["p95_s"], figures["requests_per_s"] / rate, per, cpu / per if per and cpu else None]

    rows = [row(name, 1, b) for name, b in bases]
    rows += [row(f"`xtune serve`, {lv['concurrency']} concurrent client(s)", lv["concurrency"], lv)
             for lv in result["levels"]]
    server = result.get("server", {})
    return "\n".join(["## Serving throughput", "", *bench_report.context_lines(result), "",
                      bench_report.table(["arm", "concurrency", "requests/s", "tokens/s", "p50 latency s",
                                          "p95 latency s", "requests/s vs baseline", "CPU s / request",
                                          "CPU efficiency vs baseline"], rows), "",
                      f"The server ran {server.get('batches', '–')} batches, the largest of "
                      f"{server.get('largest_batch', '–')} requests.", ""])
