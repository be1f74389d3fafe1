#!/usr/bin/env python
"""GRPO on SmolLM2-135M-Instruct with GSM8K prompts on CPU, measured: does the format reward rise?

    python tools/grpo_demo.py [--steps 15] [--sft-steps 32] [--control] [--out DIR] [--plot PNG]

Three phases, each through xtune's own commands:

1. **Probe**: the bare model answers `--probe-prompts` GSM8K questions 4 times each with the GRPO recipe's
   system prompt (which states the `<think> </think><answer> </answer>` format); how many completions match.
   SmolLM2-135M writes the tags in none of them, and GRPO learns nothing from groups whose rewards are all
   equal (every advantage is 0), so:
2. **Cold start** (DeepSeek-R1's answer to the same problem): `--sft-steps` steps of LoRA SFT
   (`smollm2_135m_instruct_lora_alpaca_e3`) on short GSM8K solutions written in the format, merged into the
   model with `xtune convert merge`. Few enough steps that sampled answers still miss the format often
   (they ramble past `--max-completion` tokens or never close a tag).
3. **GRPO**: `smollm2_135m_instruct_lora_grpo_gsm8k_e1` on other GSM8K questions (the shared
   gururise_gsm_8k_train_alpaca_format.json through the `gsm8k_alpaca` map), reward functions `format` and
   `math_verify`, for `--steps` optimizer steps. With `--control`, the same steps again at lr 1e-12: the
   same sampling without learning, so a rise that sampling noise alone would show is told apart.

Prints and writes (OUT/report.json) the figures: each reward's mean per GRPO step, seconds per step, the
format reward's mean over the first and the last 5 steps, the whole wall time and the CPU capability; with
`--plot` the curves as a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("XTUNE_SHARED_DIR", ROOT.parent / "shared"))
DATA = SHARED / "data" / "alpaca" / "gururise_gsm_8k_train_alpaca_format.json"
GRPO_RECIPE = "smollm2_135m_instruct_lora_grpo_gsm8k_e1"
SFT_RECIPE = "smollm2_135m_instruct_lora_alpaca_e3"
FORMAT = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>$", re.DOTALL)


def smollm2() -> str:
    from get_smollm2 import ensure_smollm2  # tools/get_smollm2.py

    return str(ensure_smollm2(log=lambda *a: print(*a, file=sys.stderr)))


def grpo_system() -> str:
    from gen_recipes import GRPO_SYSTEM  # the system prompt every GRPO recipe states the format in

    return GRPO_SYSTEM


def split_records(tokenizer, max_solution_tokens: int, n_sft: int, seed: int = 0):
    """(cold-start records, GRPO records): disjoint, both from the problems whose worked solution has at most
    `max_solution_tokens` tokens (their formatted answers fit the completion length)."""
    records = json.loads(DATA.read_text(encoding="utf-8"))
    short = [r for r in records if len(tokenizer(r["output"])["input_ids"]) <= max_solution_tokens]
    random.Random(seed).shuffle(short)
    return short[:n_sft], short[n_sft:]


def formatted(record: dict, system: str) -> dict:
    """An alpaca record whose answer is the worked solution in the format the `format` reward checks."""
    from xtune.data.prompt_formats import last_number

    solution = record["output"].strip()
    return {"system": system, "instruction": record["instruction"], "input": record.get("input", ""),
            "output": f"<think> {solution} </think><answer> {last_number(solution)} </answer>"}


def probe(model: str, records, system: str, max_new_tokens: int, seed: int = 0) -> dict:
    """How many of 4 sampled answers per question match the format (temperature 1: the bare model's best
    chance of writing a tag it was only told about)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
    llm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template([{"role": "system", "content": system},
                                            {"role": "user", "content": r["instruction"]}],
                                           tokenize=False, add_generation_prompt=True)
             for r in records for _ in range(4)]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = llm.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0,
                           top_p=1.0, pad_token_id=tokenizer.pad_token_id)
    answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"completions": len(answers), "in_format": sum(bool(FORMAT.match(a.strip())) for a in answers),
            "with_a_tag": sum("<think>" in a or "<answer>" in a for a in answers)}


def xtune(*argv: str) -> None:
    from xtune.cli.main import main

    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"xtune {' '.join(argv[:2])} failed ({code})")


def scalars(work: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(work.glob("*/vis_data/scalars.json"))
            for line in p.read_text().splitlines()]


def cold_start(model: str, records, system: str, out: Path, steps: int, lr: float) -> tuple[str, dict]:
    """LoRA SFT on `records` in the format, merged: the model GRPO starts from."""
    data = out / "cold_start.json"
    data.write_text(json.dumps([formatted(r, system) for r in records]), encoding="utf-8")
    start = time.perf_counter()
    xtune("train", SFT_RECIPE, "--work-dir", str(out / "sft"), "--cfg-options",
          f"pretrained_model_name_or_path={model}", "dataset_map=alpaca", f"data_path={data}",
          "max_length=512", "pack_to_max_length=False", "batch_size=4", "accumulative_counts=1",
          f"max_steps={steps}", f"save_steps={steps}", f"lr={lr}", "warmup_ratio=0.1", "evaluation_inputs=[]",
          "log_interval=1", "method_cfg.r=16", "method_cfg.lora_alpha=32", "method_cfg.lora_dropout=0.0")
    merged = out / "sft_merged"
    xtune("convert", "merge", model, str(out / "sft" / "hf"), str(merged), "--force")
    rows = scalars(out / "sft")
    return str(merged), {"steps": steps, "records": len(records), "batch": 4, "lr": lr,
                         "wall_s": round(time.perf_counter() - start, 1),
                         "loss": [round(r["loss"], 3) for r in rows if "loss" in r]}


def grpo(model: str, records, out: Path, args, name: str = "grpo", lr: float | None = None) -> dict:
    """`args.steps` GRPO steps from `model` in OUT/`name` (lr 1e-12: the control, sampling without
    learning; xtune refuses lr 0)."""
    lr = args.lr if lr is None else lr
    data = out / "grpo_prompts.json"
    data.write_text(json.dumps(records[:args.steps * args.prompts]), encoding="utf-8")
    start = time.perf_counter()
    xtune("train", GRPO_RECIPE, "--work-dir", str(out / name), "--cfg-options",
          f"pretrained_model_name_or_path={model}", "dataset_map=gsm8k_alpaca", f"data_path={data}",
          f"batch_size={args.prompts}", f"max_steps={args.steps}", f"save_steps={args.steps}",
          f"lr={lr}", "warmup_ratio=0.0", "evaluation_inputs=[]", "log_interval=1", "method_cfg.r=16",
          "method_cfg.lora_alpha=32", "method_cfg.lora_dropout=0.0",
          f"objective.num_generations={args.generations}",
          f"objective.max_completion_length={args.max_completion}",
          f"objective.temperature={args.temperature}")
    wall = time.perf_counter() - start
    rows = [r for r in scalars(out / name) if "rewards/format/mean" in r]
    fmt = [round(r["rewards/format/mean"], 4) for r in rows]
    math = [round(r["rewards/math_verify/mean"], 4) for r in rows]
    times = [r["time"] for r in rows if "time" in r]
    return {"steps": len(rows), "prompts_per_step": args.prompts, "generations": args.generations,
            "max_completion_length": args.max_completion, "temperature": args.temperature, "lr": lr,
            "wall_s": round(wall, 1),
            "median_s_per_step": round(statistics.median(times), 1) if times else None,
            "format": fmt, "math_verify": math,
            "completion_length": [round(r.get("completions/mean_length", 0), 1) for r in rows],
            "format_first_5": _mean(fmt[:5]), "format_last_5": _mean(fmt[-5:]),
            "math_first_5": _mean(math[:5]), "math_last_5": _mean(math[-5:])}


def _mean(values: list[float]) -> float:
    return round(statistics.mean(values), 3)


def plot(run: dict, control: dict | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(1, len(run["format"]) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(steps, run["format"], marker="o", label="format reward (mean of the step's completions)")
    ax.plot(steps, run["math_verify"], marker="s", label="math_verify reward")
    if control:
        ax.plot(range(1, len(control["format"]) + 1), control["format"], linestyle="--", color="grey",
                label="format reward, control (lr 1e-12: no update)")
    ax.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="GRPO optimizer steps")
    parser.add_argument("--prompts", type=int, default=4, help="questions per GRPO step")
    parser.add_argument("--generations", type=int, default=4, help="completions per question")
    parser.add_argument("--max-completion", type=int, default=96)
    parser.add_argument("--lr", type=float, default=1e-3, help="GRPO learning rate (LoRA)")
    parser.add_argument("--temperature", type=float, default=0.7, help="GRPO's sampling temperature")
    parser.add_argument("--sft-steps", type=int, default=32, help="cold-start SFT steps (0: none)")
    parser.add_argument("--sft-lr", type=float, default=2e-4)
    parser.add_argument("--max-solution-tokens", type=int, default=40)
    parser.add_argument("--probe-prompts", type=int, default=4, help="questions for the bare model (0: skip)")
    parser.add_argument("--out", default="work_dirs/grpo_demo")
    parser.add_argument("--plot", help="write the reward curves to this PNG")
    parser.add_argument("--control", action="store_true",
                        help="also run the same steps with lr 1e-12 (what sampling alone gives)")
    parser.add_argument("--cold-start-model", help="start GRPO from this model (an earlier run's "
                        "OUT/sft_merged): no probe, no cold start")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from transformers import AutoTokenizer

    if not DATA.is_file():
        print(f"Error: {DATA} not found (set XTUNE_SHARED_DIR)", file=sys.stderr)
        return 2
    begin = time.perf_counter()
    model, system = smollm2(), grpo_system()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sft_records, grpo_records = split_records(AutoTokenizer.from_pretrained(model), args.max_solution_tokens,
                                              args.sft_steps * 4)
    report = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
              "model": model, "data": str(DATA)}
    if args.probe_prompts and not args.cold_start_model:
        held = grpo_records[-args.probe_prompts:]
        report["bare_model_probe"] = probe(model, held, system, args.max_completion)
        print(json.dumps({"bare_model_probe": report["bare_model_probe"]}), flush=True)
    start_model = args.cold_start_model or model
    if args.sft_steps and not args.cold_start_model:
        start_model, report["cold_start"] = cold_start(model, sft_records, system, out, args.sft_steps,
                                                         args.sft_lr)
    report["grpo"] = grpo(start_model, grpo_records, out, args)
    if args.control:
        report["control"] = grpo(start_model, grpo_records, out, args, name="control", lr=1e-12)
    report["total_wall_s"] = round(time.perf_counter() - begin, 1)
    print(json.dumps(report, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.plot:
        plot(report["grpo"], report.get("control"), Path(args.plot),
             f"GRPO, SmolLM2-135M-Instruct + LoRA, GSM8K, CPU ({report['cpu_capability']}, "
             f"{report['threads']} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
