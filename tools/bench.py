#!/usr/bin/env python
"""Benchmarks of xtune against TRL's SFTTrainer, rerunnable by anyone: `python tools/bench.py SUBCOMMAND`.

    python tools/bench.py train --quick --json r.json   # training throughput and held-out loss, 3 arms
    python tools/bench.py data --quick                  # preprocessing rate, 1 and 2 processes, cold/warm
    python tools/bench.py cli                           # start-up time of `xtune --help` and `xtune list-cfg`
    python tools/bench.py step                          # what each engine choice buys in one SmolLM2 step
    python tools/bench.py train --device cuda           # the GPU variant (LoRA / QLoRA, bf16, FA2, MFU)
    python tools/bench.py estimate                      # `xtune estimate` vs the peak memory of real runs
    python tools/bench.py scale                         # trained tokens/s: 1 process vs 2 (DDP, ZeRO-2/3)
    python tools/bench.py serve                         # xtune serve: requests/s, latency at 1/4/16 clients
    python tools/bench.py lowmem                        # LOMO, GaLore, BAdam, LISA ...: peak and loss drop

Machines are noisy (absolute times drift between runs, ratios within one run do not), so every
subcommand compares inside one run and writes, besides `--json FILE`, its tables into its own section of
docs/benchmarks.md with the machine, versions, date and settings. TRL is a benchmark-only dependency:
`pip install -e .[bench] -c constraints.txt`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_report  # noqa: E402  (the tools folder is not a package)

REPO = Path(__file__).resolve().parent.parent


def xtune_executable() -> list[str]:
    """The installed `xtune` script beside this Python, else `python -m xtune`."""
    script = Path(sys.executable).with_name("xtune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "xtune"]


def time_command(argv: list[str], runs: int, env: dict | None = None) -> dict:
    """Median, min and max wall seconds of `runs` runs of `argv` (one unmeasured warm-up run first)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        if i:
            times.append(elapsed)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}


CLI_COMMANDS = {"xtune --help": ["--help"], "xtune list-cfg": ["list-cfg"],
                "xtune list-cfg --json": ["list-cfg", "--json"]}
CLI_GOAL_S = 0.3


def bench_cli(args) -> dict:
    runs = getattr(args, "runs", None) or (5 if args.quick else 15)
    exe = xtune_executable()
    baseline = time_command([sys.executable, "-c", "pass"], runs)
    figures = {name: time_command(exe + argv, runs) for name, argv in CLI_COMMANDS.items()}
    result = bench_report.header("cli", {"runs": runs, "executable": " ".join(exe)})
    result.update(python_startup=baseline, commands=figures,
                  list_cfg_under_goal=figures["xtune list-cfg"]["median_s"] < CLI_GOAL_S)
    return result


def cli_markdown(result: dict) -> str:
    keys = ("median_s", "min_s", "max_s")
    rows = [["python -c pass (interpreter alone)", *(result["python_startup"][k] for k in keys)]]
    rows += [[name, *(f[k] for k in keys)] for name, f in result["commands"].items()]
    goal = "met" if result["list_cfg_under_goal"] else "NOT met"
    return "\n".join(["## CLI start-up", "", *bench_report.context_lines(result), "",
                      bench_report.table(["command", "median s", "min s", "max s"], rows), "",
                      f"Goal `xtune list-cfg` under {CLI_GOAL_S} s: {goal}.", ""])


def bench_train(args) -> dict:
    import bench_train as bt

    out = Path(args.out or tempfile.mkdtemp(prefix="xtune-bench-train-"))
    runs = []
    gpu = None
    if args.device == "cuda":
        from bench_gpu import describe_gpu

        gpu = describe_gpu()
    for profile in bt.profiles(args.quick, args.device):
        if args.only and profile["name"] not in args.only:
            continue
        if args.records:
            profile = dict(profile, train_records=args.records)
        runs.append(bt.run_profile(profile, out / profile["name"], device=args.device, log=_log))
    settings = {"mode": "quick" if args.quick else "full", "device": args.device, "work": str(out)}
    result = bench_report.header("train", settings, gpu=gpu)
    result["runs"] = runs
    if args.device == "cuda":
        from bench_gpu import add_mfu

        add_mfu(result)
    first = runs[0] if runs else {}
    result["ratio"], result["ratio_packed"] = first.get("ratio"), first.get("ratio_packed")
    result["heldout_comparable"] = all(r["heldout_comparable"] for r in runs) if runs else None
    return result


def bench_step(args) -> dict:
    import bench_step as bs
    import bench_train as bt
    from bench_common import shared_dir

    model = bt.smollm2_dir()
    if model is None:
        raise SystemExit("Error: bench.py step needs SmolLM2-135M-Instruct (tools/get_smollm2.py)")
    out = Path(args.out or tempfile.mkdtemp(prefix="xtune-bench-step-"))
    train, _ = bt.split_records(str(shared_dir() / "data" / "alpaca" / "llamafactory_alpaca_en_demo.json"),
                                48, 32, out)
    result = bench_report.header("step", {"model": Path(model).name, "records": 48})
    result.update(bs.run(str(model), str(train), rounds=3 if args.quick else 7, log=_log))
    return result


def bench_data(args) -> dict:
    import bench_data as bd

    out = Path(args.out or tempfile.mkdtemp(prefix="xtune-bench-data-"))
    return bd.run(quick=args.quick, out=out, log=_log)


def bench_estimate(args) -> dict:
    import bench_estimate as be

    return be.run(device=args.device, quick=args.quick, out=Path(args.out) if args.out else None, log=_log)


def bench_scale(args) -> dict:
    import bench_scale as bsc

    return bsc.run(quick=args.quick, out=Path(args.out) if args.out else None, log=_log)


def bench_lowmem(args) -> dict:
    import bench_lowmem as bl

    previous = json.loads(Path(args.json).read_text(encoding="utf-8")) if args.only and args.json and \
        Path(args.json).is_file() else None
    return bl.run(quick=args.quick, out=Path(args.out) if args.out else None, log=_log, only=args.only,
                  previous=previous)


def bench_serve(args) -> dict:
    import bench_serve as bsv

    return bsv.run(quick=args.quick, out=Path(args.out or tempfile.mkdtemp(prefix="xtune-bench-serve-")),
                   log=_log)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _train_markdown(result: dict) -> str:
    import bench_train as bt

    text = bt.markdown(result)
    if result["settings"].get("device") == "cuda":
        from bench_gpu import mfu_markdown

        text += "\n" + mfu_markdown(result)
    return text


def _data_markdown(result: dict) -> str:
    import bench_data as bd

    return bd.markdown(result)


def _estimate_markdown(result: dict) -> str:
    import bench_estimate as be

    return be.markdown(result)


SUBCOMMANDS = {
    "train": (bench_train, _train_markdown, "training throughput, memory and held-out loss: xtune vs TRL"),
    "data": (bench_data, _data_markdown,
             "preprocessing rate: xtune's data pipeline vs TRL's dataset preparation"),
    "cli": (bench_cli, cli_markdown, "start-up time of `xtune --help` and `xtune list-cfg`"),
    "step": (bench_step, lambda r: __import__("bench_step").markdown(r),
             "one SmolLM2 LoRA step: labelled-only logits, bf16 vs fp32, sdpa vs eager"),
    "estimate": (bench_estimate, _estimate_markdown,
                 "memory: `xtune estimate` vs the measured peak of real trainings"),
    "scale": (bench_scale, lambda r: __import__("bench_scale").markdown(r),
              "trained tokens/s of 1 process vs 2 (DDP, ZeRO-2, ZeRO-3), same global batch"),
    "lowmem": (bench_lowmem, lambda r: __import__("bench_lowmem").markdown(r),
               "low-memory methods on SmolLM2: measured peak vs estimate, held-out loss drop"),
    "serve": (bench_serve, lambda r: __import__("bench_serve").markdown(r),
              "xtune serve on SmolLM2: requests/s, p50/p95 latency at 1, 4, 16 clients vs one-at-a-time"),
}
DOCS = {"serve": bench_report.REPO / "docs" / "serve.md",
        "lowmem": bench_report.REPO / "docs" / "training.md"}  # a section in its own page, not benchmarks.md


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--quick", action="store_true", help="the few-minute version (CPU: tiny model)")
        p.add_argument("--json", metavar="FILE", help="write the result here")
        p.add_argument("--doc", default=str(DOCS.get(name, bench_report.DOC)),
                       help="Markdown file whose section is rewritten")
        p.add_argument("--no-doc", action="store_true", help="leave the Markdown file alone")
        p.add_argument("--out", metavar="DIR", help="working folder (default: a new temporary folder)")
        p.add_argument("--from-json", metavar="FILE",
                       help="render a saved --json result instead of measuring")
        if name == "cli":
            p.add_argument("--runs", type=int, help="measured runs per command (default 5 quick, 15 full)")
        if name == "train":
            p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
            p.add_argument("--only", nargs="+", metavar="PROFILE", help="run only these profiles")
            p.add_argument("--records", type=int, metavar="N",
                           help="train on N records (default: the profile's)")
        if name == "estimate":
            p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        if name == "lowmem":
            p.add_argument("--only", nargs="+", metavar="RECIPE_KEY",
                           help="measure only these rows (full, lora, lomo, ...); the rest from --json FILE")
    worker = sub.add_parser("_worker", help=argparse.SUPPRESS)
    worker.add_argument("spec")
    return parser


def missing_requirements(command: str) -> str | None:
    """Why `command` cannot run here (TRL or the shared data absent), or None."""
    import importlib.util

    if command == "serve":
        missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
        return f"{' and '.join(missing)} not installed: pip install -e '.[serve]'" if missing else None
    if command not in ("train", "data", "step", "estimate", "scale", "lowmem"):
        return None
    if command not in ("estimate", "scale", "lowmem") and importlib.util.find_spec("trl") is None:
        return ("TRL is not installed: `pip install -e '.[bench]' -c constraints.txt` "
                "(or XTUNE_EXTRAS=test,bench bash tools/setup.sh)")
    from bench_common import shared_dir

    if not (shared_dir() / "data").is_dir():
        return f"the shared data folder {shared_dir()} is missing (set XTUNE_SHARED_DIR)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "_worker":
        import bench_train

        return bench_train.worker(args.spec)
    problem = None if args.from_json else missing_requirements(args.command)
    if problem:
        print(f"Error: {problem}", file=sys.stderr)
        return 2
    run, render, _ = SUBCOMMANDS[args.command]
    if args.from_json:  # re-render a saved result (e.g. after changing the tables), measuring nothing
        result = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        result = run(args)
    text = render(result)
    print(text)
    if args.json:
        _log(f"wrote {bench_report.write_json(result, args.json)}")
    if not args.no_doc:
        _log(f"updated {bench_report.update_doc(args.command, text, args.doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
