"""`bench.py scale`: trained tokens/s of one process against two (DDP, ZeRO-2, ZeRO-3), in one run.

Every arm is `xtune train` as users start it (`NPROC_PER_NODE=2 xtune train RECIPE --deepspeed zero2`), with
the same global batch of packed rows (1 process x micro-batch 4 against 2 processes x micro-batch 2; with
sequence parallel 2, both processes take the same 4 rows, half of each), so every arm trains the same rows
in the same steps. The throughput comes from the run's own log (`vis_data/scalars.json`): the
trained tokens of each step over all processes (`global_tokens`, what the loss averages over) divided by the
step's time, summed over the steps after the first two (warm-up). Speed-up is against the 1-process arm
*on the same machine*: on a CPU the one process already uses every core with threads, so the ideal there is
1.0, not 2.0; on N GPUs it is N.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import REPO, offline_env, shared_dir, tiny_model

# (label, processes, DeepSpeed preset, sequence_parallel_size)
ARMS = [("1 process", 1, None, 1), ("2 processes, DDP", 2, None, 1), ("2 processes, ZeRO-2", 2, "zero2", 1),
        ("2 processes, ZeRO-3", 2, "zero3", 1), ("2 processes, sequence parallel 2", 2, None, 2)]
GLOBAL_BATCH = 4
WARMUP_STEPS = 2
MEMORY_ARMS = [("1 process, 1 row", 1, None, 1), ("2 processes, sequence parallel 2, 1 row", 2, None, 2)]


def profiles(quick: bool) -> list[dict]:
    data = shared_dir() / "data" / "alpaca" / "llamafactory_alpaca_en_demo.json"
    out = [dict(name="tiny-llama2", model=str(tiny_model()), recipe="llama2_7b_lora_alpaca_e3",
                data=str(data), max_length=512, steps=12 if quick else 30),
           # memory: one 8k-token row per step, whole in one process or cut in two (its logits and
           # activations halve per process)
           dict(name="tiny-llama2-8k-rows", model=str(tiny_model()), recipe="llama2_7b_lora_alpaca_e3",
                data=str(data), max_length=8192, steps=4, global_batch=1, arms=MEMORY_ARMS)]
    if not quick:
        import bench_train

        smollm2 = bench_train.smollm2_dir()
        if smollm2 is not None:
            out.append(dict(name="smollm2-135m-lora", model=str(smollm2),
                            recipe="smollm2_135m_instruct_lora_alpaca_e3", data=str(data), max_length=512,
                            steps=6))
    return out


def model_heads(model: str) -> tuple[int, int]:
    config = json.loads((Path(model) / "config.json").read_text())
    heads = int(config["num_attention_heads"])
    return heads, int(config.get("num_key_value_heads") or heads)


def parse_arm(work_dir: Path, nproc: int, deepspeed: str | None, sp: int) -> dict:
    """An arm's figures from its work dir (`loss_history.json`, `vis_data/scalars.json`)."""
    peaks = json.loads((work_dir / "loss_history.json").read_text()).get("peak_memory_mib", [])
    scalars = next(work_dir.glob("*/vis_data/scalars.json"))
    rows = [json.loads(line) for line in scalars.read_text().splitlines()]
    steps = [r for r in rows if "global_tokens" in r and "time" in r][WARMUP_STEPS:]
    tokens, seconds = sum(r["global_tokens"] for r in steps), sum(r["time"] for r in steps)
    return {"processes": nproc, "deepspeed": deepspeed, "sequence_parallel": sp, "steps_timed": len(steps),
            "trained_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "final_loss": rows[-1].get("loss"), "peak_memory_mib": max(peaks) if peaks else None}


def run_arm(profile: dict, nproc: int, deepspeed: str | None, sp: int, work_dir: Path, port: int) -> dict:
    options = [f"pretrained_model_name_or_path={profile['model']}", f"data_path={profile['data']}",
               f"max_length={profile['max_length']}", f"max_steps={profile['steps']}", "save_steps=0",
               "evaluation_inputs=[]", "log_interval=1", "accumulative_counts=1", "export_hf=False",
               f"batch_size={profile.get('global_batch', GLOBAL_BATCH) * sp // nproc}",
               f"sequence_parallel_size={sp}", "seed=0",
               "pack_to_max_length=True"]
    cmd = [sys.executable, "-m", "xtune", "train", profile["recipe"], "--work-dir", str(work_dir)]
    if deepspeed:
        cmd += ["--deepspeed", deepspeed]
    env = offline_env({"NPROC_PER_NODE": str(nproc), "PORT": str(port)})
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS"):
        env.pop(var, None)
    proc = subprocess.run([*cmd, "--cfg-options", *options], env=env, capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return parse_arm(work_dir, nproc, deepspeed, sp)


def run(quick: bool, out: Path | None, log=print) -> dict:
    import bench_report

    from xtune.engine.launch import free_port

    out = Path(out or tempfile.mkdtemp(prefix="xtune-bench-scale-"))
    result = bench_report.header("scale", {"global_batch": GLOBAL_BATCH, "warmup_steps": WARMUP_STEPS,
                                           "cpus": os.cpu_count()})
    result["profiles"] = []
    for profile in profiles(quick):
        arms = []
        heads = model_heads(profile["model"])
        for label, nproc, deepspeed, sp in profile.get("arms", ARMS):
            if any(h % sp for h in heads):  # SmolLM2-135M: 9 heads, 3 key-value heads
                log(f"[{profile['name']}] {label}: skipped, {heads} heads do not split in {sp}")
                continue
            log(f"[{profile['name']}] {label} ...")
            folder = out / profile["name"] / label.replace(" ", "_").replace(",", "")
            arm = run_arm(profile, nproc, deepspeed, sp, folder, free_port())
            arm["label"] = label
            log(f"[{profile['name']}]   {arm['tokens_per_s']:.1f} trained tokens/s")
            arms.append(arm)
        base = arms[0]["tokens_per_s"]
        for arm in arms:
            arm["speedup"] = arm["tokens_per_s"] / base
        result["profiles"].append({**profile, "arms": arms})
    return result


def markdown(result: dict) -> str:
    from bench_report import context_lines, fmt, table

    lines = ["## Scaling across processes (`bench.py scale`)", "", *context_lines(result), ""]
    for profile in result["profiles"]:
        batch = profile.get("global_batch", GLOBAL_BATCH)
        lines += [f"**{profile['name']}** ({profile['recipe']}, {profile['steps']} steps, global batch "
                  f"{batch} rows, max_length {profile['max_length']})", ""]
        rows = [[a["label"], fmt(a["tokens_per_s"]), fmt(a["tokens_per_s"] / a["processes"]),
                 fmt(a["speedup"]), fmt(a["peak_memory_mib"]), fmt(a["final_loss"], 5)]
                for a in profile["arms"]]
        headers = ["arm", "trained tokens/s", "per process", "speed-up vs 1 process",
                   "peak memory per process, MiB", "last loss"]
        lines += [table(headers, rows), ""]
    lines.append("Speed-up is on the same machine: on a CPU the 1-process arm already uses every core, so "
                 "the ideal is 1.0 (on N GPUs, N). The arms train the same rows in the same steps (the last "
                 "loss agrees).")
    return "\n".join(lines) + "\n"
