"""`bench.py lowmem`: the low-memory methods on SmolLM2-135M-Instruct, side by side (issue 28).

Every row trains the same data for the same number of optimizer steps with one method, each in a fresh
process (`bench_estimate`'s worker: peak resident set, VmHWM, with Python and its libraries), and reports
the measured peak beside `xtune estimate`'s figure for the same recipe and overrides, and the held-out loss
before training (step 0) and after the last step. Learning rates are each recipe's own (the methods differ
by orders of magnitude: LOMO is SGD); BAdam switches blocks every step and LISA draws layers every 2, so
that a short run visits several. Writes a table into docs/training.md and a chart (PNG) beside it.

    python tools/bench.py lowmem            # SmolLM2-135M-Instruct on CPU (~25 min on 2 cores)
    python tools/bench.py lowmem --quick    # the tiny Llama: checks the harness, says nothing of quality
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bench_common import TOOLS, shared_dir, tiny_model
from bench_estimate import GOAL, estimate_row, measure_row

# (label, recipe key, overrides beyond the shared settings)
METHODS = [("full (AdamW)", "full", {}), ("LoRA r64", "lora", {}), ("QLoRA r64", "qlora", {}),
           ("LoRA r64 + PiSSA", "lora_pissa", {}), ("LOMO", "lomo", {}), ("AdaLomo", "adalomo", {}),
           ("GaLore r16", "galore", {}), ("APOLLO r16", "apollo", {}),
           ("BAdam", "badam", {"method_cfg.switch_interval": 1}),
           ("LISA 2 layers", "lisa", {"method_cfg.step_interval": 2})]
# rows of 512 tokens, 2 a step: the shape `bench.py estimate` checks the estimate at (~10 s a step on 2 cores)
SETTINGS = dict(max_length=512, batch_size=2, max_steps=8, accumulative_counts=1, val_ratio=0.05)
QUICK = dict(max_length=64, batch_size=2, max_steps=4, accumulative_counts=1, val_ratio=0.05)
IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "lowmem_smollm2.png"


def rows(quick: bool) -> list[dict]:
    data = str(shared_dir() / "data" / "alpaca" / "llamafactory_alpaca_en_demo.json")
    if quick:
        label, path, prefix = "llama2-tiny", str(tiny_model()), "llama2_7b"
    else:
        sys.path.insert(0, str(TOOLS))
        from get_smollm2 import ensure_smollm2

        label, path, prefix = "SmolLM2-135M-Instruct", str(ensure_smollm2(log=lambda m: None)), \
            "smollm2_135m_instruct"
    settings = QUICK if quick else SETTINGS
    out = []
    for name, key, extra in METHODS:
        recipe = f"{prefix}_{key}_alpaca_e3"
        if quick and key not in ("full", "lora", "qlora"):  # the tiny model has no such recipes: switch
            recipe = f"{prefix}_lora_alpaca_e3"
            extra = {"method_cfg.type": key.split("_")[0], **extra}
            if key == "lora_pissa":
                extra = {"method_cfg.init": "pissa"}
            if key in ("lomo", "adalomo"):
                extra.update(max_norm=None)
            if key == "lisa":  # the tiny model has one decoder layer
                extra["method_cfg.activated_layers"] = 1
        options = dict(pretrained_model_name_or_path=path, data_path=data, save_steps=1000, export_hf=False,
                       evaluation_inputs=[], plot_loss=False, val_steps=settings["max_steps"], **settings,
                       **extra)
        out.append(dict(model=label, method=name, recipe=recipe, device="cpu",
                        cfg_options=[f"{k}={v}" for k, v in options.items()]))
    return out


def run(quick: bool = False, out: Path | None = None, log=print, only=None,
        previous: dict | None = None) -> dict:
    """Measure every row (or the `only` ones: recipe keys, the rest kept from `previous`)."""
    from bench_report import header

    out = Path(out or tempfile.mkdtemp(prefix="xtune-bench-lowmem-"))
    kept = {r["recipe"]: r for r in (previous or {}).get("rows", [])}
    results = []
    for i, row in enumerate(rows(quick)):
        key = row["recipe"].split("_instruct_")[-1].removesuffix("_alpaca_e3")
        if only and key not in only and row["recipe"] in kept:
            results.append(kept[row["recipe"]])
            continue
        log(f"[{i + 1}] {row['method']}: {row['recipe']} ...")
        work = out / f"{i:02d}"
        measured = measure_row(row, work, log)
        estimate = estimate_row(row, measured["labelled_share"])
        history = json.loads((work / "run" / "loss_history.json").read_text(encoding="utf-8"))
        val = history["val"]
        error = estimate["peak"] / measured["peak"] - 1
        result = dict(row, measured=measured, estimate=estimate, error=error, val_before=val[0]["loss"],
                      val_after=val[-1]["loss"], steps=history["train"][-1]["step"],
                      train_losses=[h["loss"] for h in history["train"]])
        log(f"    peak {measured['peak'] / 2**30:.2f} GiB (estimate {estimate['peak'] / 2**30:.2f}, "
            f"{error:+.1%}); held-out loss {result['val_before']:.4f} -> {result['val_after']:.4f}")
        results.append(result)
    result = header("lowmem", dict(device="cpu", **(QUICK if quick else SETTINGS)))
    result["rows"] = results
    result["within_goal"] = all(abs(r["error"]) <= GOAL for r in results)
    if not quick:
        chart(result, IMAGE)
    return result


def chart(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_ = result["rows"]
    names = [r["method"] for r in rows_]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    y = range(len(rows_))
    left.barh([i + 0.2 for i in y], [r["measured"]["peak"] / 2**30 for r in rows_], 0.4, label="measured")
    estimates = [r["estimate"]["peak"] / 2**30 for r in rows_]
    left.barh([i - 0.2 for i in y], estimates, 0.4, label="xtune estimate")
    left.set_yticks(list(y), names)
    left.invert_yaxis()
    left.set_xlabel("peak memory (GiB, RSS)")
    left.legend(loc="lower right")
    right.barh(list(y), [r["val_before"] - r["val_after"] for r in rows_], 0.6, color="tab:green")
    right.set_yticks(list(y), names)
    right.invert_yaxis()
    right.set_xlabel(f"held-out loss drop after {result['settings']['max_steps']} steps")
    fig.suptitle(f"{rows_[0]['model']}, CPU ({result['machine'].get('cpu_capability', '')}): "
                 "the same data and steps per method")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(result: dict) -> str:
    from bench_report import context_lines, table

    gib = 2**30
    rows_ = [[r["method"], r["recipe"], r["measured"]["peak"] / gib, r["estimate"]["peak"] / gib,
              f"{r['error']:+.1%}", r["val_before"], r["val_after"], r["val_before"] - r["val_after"]]
             for r in result["rows"]]
    goal = "met" if result["within_goal"] else "NOT met"
    image = "" if "tiny" in result["rows"][0]["model"] else \
        f"![peak memory and held-out loss drop per method](images/{IMAGE.name})\n"
    title = f"#### Measured: {result['rows'][0]['model']} on CPU (`python tools/bench.py lowmem`)"
    return "\n".join([title, "",
                      *context_lines(result), "",
                      table(["method", "recipe", "measured peak (GiB)", "estimate (GiB)", "error",
                             "held-out loss before", "after", "drop"], rows_), "",
                      f"Goal: every estimate within {GOAL:.0%} of the measured peak: {goal}.", "", image])
