"""`bench.py estimate`: `xtune estimate` against the peak memory of real `xtune train` runs.

Each row trains a recipe for a few optimizer steps in a fresh process (this file run as a worker), so
imports and allocator state never carry over from one row to the next, and compares the peak with what
`xtune estimate` predicts for the same recipe and overrides:
- CPU: the process's peak resident set (VmHWM: everything the process holds, Python and its libraries
  included), plus, on the way, the RSS just before the model loads (what the estimate's measured "CPU
  runtime" term stands for), after loading, before the final checkpoint save and at the end;
- the share of tokens that carry a label, counted in the training loop: xtune computes logits only
  there, and the estimate is given this property of the data (its default, 1, is the upper bound);
- GPU (when one is there): `torch.cuda.max_memory_allocated` (tensors only: the CUDA context and the
  allocator's cache are not in it, nor in the estimate).
Goal: every row within 15 %.

    python tools/bench.py estimate [--quick]        # CPU: tiny Llama-2 and SmolLM2-135M, full/LoRA/QLoRA
    python tools/bench.py estimate --device cuda    # GPU rows: Qwen2.5-0.5B full/LoRA, Qwen2.5-7B QLoRA
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import TOOLS, shared_dir, tiny_model

GOAL = 0.15
METHODS = ("full", "lora", "qlora")
CPU_SETTINGS = dict(max_length=512, batch_size=2, max_steps=3)
GPU_SETTINGS = dict(max_length=2048, batch_size=1, max_steps=5)


def rows(device: str, quick: bool) -> list[dict]:
    """The runs: model, recipe (its family's), tuning method and the overrides they share."""
    data = str(shared_dir() / "data" / "alpaca" / "llamafactory_alpaca_en_demo.json")
    if device == "cuda":
        models = [("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "qwen2_5_0_5b_instruct",
                   ("full", "lora")),
                  ("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "qwen2_5_7b_instruct", ("qlora",))]
        settings = GPU_SETTINGS
    else:
        tiny = tiny_model()
        models = [("llama2-tiny", str(tiny), "llama2_7b", METHODS)]
        if not quick:
            sys.path.insert(0, str(TOOLS))
            from get_smollm2 import ensure_smollm2

            models.append(("SmolLM2-135M-Instruct", str(ensure_smollm2(log=lambda m: None)),
                           "smollm2_135m_instruct", METHODS))
        settings = CPU_SETTINGS
    out = []
    for label, path, prefix, methods in models:
        for method in methods:
            options = dict(pretrained_model_name_or_path=path, data_path=data, accumulative_counts=1,
                           save_steps=1000, export_hf=False, evaluation_inputs=[], plot_loss=False,
                           **settings)
            out.append(dict(model=label, method=method, recipe=f"{prefix}_{method}_alpaca_e3", device=device,
                            cfg_options=[f"{k}={v}" for k, v in options.items()]))
    return out


def estimate_row(row: dict, labelled_share: float = 1.0) -> dict:
    """What `xtune estimate` says for the row (same recipe, same overrides, the data's labelled share)."""
    from xtune.estimate import estimate_recipe_cfg
    from xtune.estimate.report import as_json
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    registry = get_registry()
    cfg = load_recipe(resolve_recipe(row["recipe"], registry), row["cfg_options"])
    from xtune.plan import resolve_plan

    est = estimate_recipe_cfg(cfg, registry, resolve_plan(cfg, registry), device=row["device"],
                              labelled_share=labelled_share)
    return as_json(est, row["recipe"])["bytes"]


def measure_row(row: dict, work: Path, log=print) -> dict:
    """Run the row's training in a fresh worker process; returns its measurements (bytes)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "spec.json"
    spec.write_text(json.dumps(dict(row, work_dir=str(work / "run"), result=str(work / "result.json"))))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(spec)], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{row['recipe']} ({row['model']}) failed: {done.stderr.strip()[-1500:]}")
    return json.loads((work / "result.json").read_text())


def run(device: str = "cpu", quick: bool = False, out: Path | None = None, log=print) -> dict:
    from bench_report import header

    out = Path(out or tempfile.mkdtemp(prefix="xtune-bench-estimate-"))
    results = []
    for i, row in enumerate(rows(device, quick)):
        log(f"[{i + 1}] {row['model']} {row['method']}: training {row['cfg_options'][-1]} ...")
        measured = measure_row(row, out / f"{i:02d}-{row['method']}", log)
        estimate = estimate_row(row, measured["labelled_share"])
        error = estimate["peak"] / measured["peak"] - 1
        log(f"    measured {measured['peak'] / 2**30:.2f} GiB, estimated {estimate['peak'] / 2**30:.2f} GiB "
            f"({error:+.1%})")
        results.append(dict(row, measured=measured, estimate=estimate, error=error))
    settings = dict(device=device, **(GPU_SETTINGS if device == "cuda" else CPU_SETTINGS), accumulation=1)
    result = header("estimate", settings)
    result["rows"] = results
    result["within_goal"] = all(abs(r["error"]) <= GOAL for r in results)
    return result


def markdown(result: dict) -> str:
    from bench_report import context_lines, table

    gib = 2**30
    device = result["settings"]["device"]
    what = "peak RSS (VmHWM)" if device == "cpu" else "torch.cuda.max_memory_allocated"
    rows_ = []
    for r in result["rows"]:
        m, e = r["measured"], r["estimate"]
        rows_.append([r["model"], r["method"], f"{m.get('labelled_share', 1):.0%}",
                      m.get("before_model", 0) / gib, m["peak"] / gib, e["peak"] / gib, f"{r['error']:+.1%}",
                      "yes" if abs(r["error"]) <= GOAL else "NO"])
    goal = "met" if result["within_goal"] else "NOT met"
    return "\n".join([f"## Memory estimate vs measured peak ({device})", "", *context_lines(result), "",
                      table(["model", "method", "labelled tokens", "RSS before the model (GiB)",
                             f"measured {what} (GiB)",
                             "estimated (GiB)", "error", "within 15 %"], rows_), "",
                      f"Goal: every row within {GOAL:.0%}: {goal}.", ""])


# ------------------------------------------------------------------------------------- the worker
def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def worker(spec_path: str) -> int:
    """Train the row in this process, recording memory at the phase boundaries."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    marks: dict[str, int] = {}
    import xtune.models.build as build

    load_model = build.load_model

    def measured_load(*args, **kwargs):
        marks["before_model"] = _status_bytes("VmRSS:")
        model = load_model(*args, **kwargs)
        marks["after_load_hwm"] = _status_bytes("VmHWM:")
        return model

    build.load_model = measured_load  # the one model builder's own name for it
    from mmengine.runner import Runner

    save = Runner.save_checkpoint

    def measured_save(self, *args, **kwargs):
        marks.setdefault("before_save_hwm", _status_bytes("VmHWM:"))
        return save(self, *args, **kwargs)

    Runner.save_checkpoint = measured_save
    import xtune.objectives.sft as sft  # SFT's loss calls it through its module: patch it there

    loss = sft.labelled_token_loss
    counts = [0, 0]

    def counted_loss(llm, labels, model_kwargs, **kwargs):
        counts[0] += int((labels[:, 1:] != sft.IGNORE_INDEX).sum())
        counts[1] += labels[:, 1:].numel()
        return loss(llm, labels, model_kwargs, **kwargs)

    sft.labelled_token_loss = counted_loss
    from xtune.cli.main import main

    code = main(["train", spec["recipe"], "--work-dir", spec["work_dir"],
                 "--cfg-options", *spec["cfg_options"]])
    if code != 0:
        return code
    if spec["device"] == "cuda":
        import torch

        marks["peak"] = int(torch.cuda.max_memory_allocated())
    else:
        marks["peak"] = _status_bytes("VmHWM:")
    marks["labelled_share"] = counts[0] / counts[1] if counts[1] else 1.0
    Path(spec["result"]).write_text(json.dumps(marks), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(worker(sys.argv[1]))
