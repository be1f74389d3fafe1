#!/usr/bin/env python
"""DPO, ORPO and a reward model on SmolLM2-135M-Instruct with LLaMA-Factory's DPO demo pairs, measured.

    python tools/preference_demo.py [--steps 48] [--pairs 32] [--only dpo orpo reward] [--out DIR]

Each objective trains its generated recipe (`smollm2_135m_instruct_lora_{dpo,orpo,reward}_ultrafeedback_e1`)
through `xtune train` with `--cfg-options` pointing it at ../shared/data/preference_dpo/
llamafactory_dpo_en_demo.json. DPO and ORPO train on the `--pairs` shortest pairs (several epochs) and report
the implicit-reward accuracy and mean margin on those pairs before and after; the reward model trains on
the other pairs except the 60 shortest-but-unused ones, on which it reports its accuracy (held out). Prints
one JSON object with the figures, the time per optimizer step and the CPU capability.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("XTUNE_SHARED_DIR", ROOT.parent / "shared"))
DATA = SHARED / "data" / "preference_dpo" / "llamafactory_dpo_en_demo.json"
RECIPE = "smollm2_135m_instruct_lora_{}_ultrafeedback_e1"
MAX_LENGTH = 256


def smollm2() -> str:
    from get_smollm2 import ensure_smollm2  # tools/get_smollm2.py

    return str(ensure_smollm2(log=lambda *a: print(*a, file=sys.stderr)))


def split_pairs(tokenizer, n_train: int, n_held: int):
    """(train, held-out, reward-train) records: the shortest pairs first (their answers fit MAX_LENGTH)."""
    records = json.loads(DATA.read_text(encoding="utf-8"))

    def length(r):
        text = r["conversations"][-1]["value"] + max(r["chosen"]["value"], r["rejected"]["value"], key=len)
        return len(tokenizer(text)["input_ids"])

    ordered = sorted(records, key=length)
    return ordered[:n_train], ordered[n_train:n_train + n_held], ordered[n_train + n_held:]


def train(objective: str, model: str, data: Path, work: Path, steps: int, batch: int, lr: float) -> dict:
    from xtune.cli.main import main

    opts = [f"pretrained_model_name_or_path={model}", "dataset_map=sharegpt_preference", f"data_path={data}",
            f"max_length={MAX_LENGTH}", "pack_to_max_length=False", f"batch_size={batch}",
            "accumulative_counts=1", f"max_steps={steps}", f"save_steps={steps}", f"lr={lr}",
            "evaluation_inputs=[]", "log_interval=1", "warmup_ratio=0.1", "method_cfg.r=16",
            "method_cfg.lora_alpha=32", "method_cfg.lora_dropout=0.0"]
    start = time.perf_counter()
    code = main(["train", RECIPE.format(objective), "--work-dir", str(work), "--cfg-options", *opts])
    if code != 0:
        raise SystemExit(f"xtune train {objective} failed ({code})")
    wall = time.perf_counter() - start
    rows = [json.loads(line) for p in work.glob("*/vis_data/scalars.json")
            for line in p.read_text().splitlines()]
    times = [r["time"] for r in rows if "time" in r]
    return {"steps": steps, "batch_pairs": batch, "lr": lr, "wall_s": round(wall, 1),
            "median_s_per_step": round(statistics.median(times), 2) if times else None,
            "final_loss": rows[-1].get("loss") if rows else None}


def pair_batches(records, tokenizer, tmp: Path):
    """The pipeline's own unpacked rows for `records`, collated two pairs at a time."""
    from xtune.data.pipeline import build_train_dataset
    from xtune.data.preference_collate import collator_for
    from xtune.plugins import get_registry

    path = tmp / "eval_pairs.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    cfg = {"dataset_map": "sharegpt_preference", "data_path": str(path), "rows": "pairs",
           "prompt_template": "smollm2_chat", "max_length": MAX_LENGTH, "pack_to_max_length": False}
    rows = build_train_dataset(cfg, tokenizer, registry=get_registry(), use_cache=False, progress=False)
    collate = collator_for(cfg, tokenizer)
    return [collate([rows[i] for i in range(s, min(s + 2, len(rows)))]) for s in range(0, len(rows), 2)]


def implicit_rewards(model_dir: str, adapter: Path, batches, objective: str, beta: float = 0.1) -> dict:
    """Accuracy and mean margin of the objective's implicit reward (DPO: beta x log ratio to the reference,
    the model with the adapter off; ORPO: beta x mean log-prob), trained adapter vs. none."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from xtune.objectives.logps import token_logps

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    margins = []
    with torch.no_grad():
        for batch in batches:
            tokens = token_logps(model, batch)
            if objective == "dpo":
                with model.disable_adapter():
                    ref = token_logps(model, batch).sums()
                scores = beta * (tokens.sums() - ref)
            else:
                scores = beta * tokens.means()
            margins += (scores[0::2] - scores[1::2]).tolist()
    return {"pairs": len(margins), "accuracy": round(sum(m > 0 for m in margins) / len(margins), 4),
            "mean_margin": round(sum(margins) / len(margins), 4)}


def reward_accuracy(adapter: Path, batches) -> dict:
    import torch

    from xtune.models.build import load_reward_model
    from xtune.objectives.reward import sample_scores

    model, _ = load_reward_model(str(adapter))
    margins = []
    with torch.no_grad():
        for batch in batches:
            scores = sample_scores(model, batch)
            margins += (scores[0::2] - scores[1::2]).tolist()
    return {"held_out_pairs": len(margins), "accuracy": round(sum(m > 0 for m in margins) / len(margins), 4),
            "mean_margin": round(sum(margins) / len(margins), 4)}


def ppo(model: str, reward: Path, records, work: Path, steps: int) -> dict:
    """A few PPO steps of the SmolLM2 policy against the reward model just trained (held-out prompts)."""
    from xtune.cli.main import main

    data = work.parent / "ppo_prompts.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    opts = [f"pretrained_model_name_or_path={model}", "dataset_map=sharegpt_preference", f"data_path={data}",
            "max_length=256", "batch_size=4", f"max_steps={steps}", f"save_steps={steps}", "lr=1e-5",
            "evaluation_inputs=[]", "log_interval=1", "objective.max_new_tokens=32", "objective.ppo_epochs=2",
            f"objective.reward_model={reward}", "method_cfg.r=16"]
    start = time.perf_counter()
    if main(["train", RECIPE.format("ppo"), "--work-dir", str(work), "--cfg-options", *opts]) != 0:
        raise SystemExit("xtune train ppo failed")
    rows = [json.loads(line) for p in work.glob("*/vis_data/scalars.json")
            for line in p.read_text().splitlines()]
    return {"steps": steps, "prompts_per_step": 4, "wall_s": round(time.perf_counter() - start, 1),
            "scores": [round(r["ppo/score"], 3) for r in rows if "ppo/score" in r],
            "kl": [round(r["ppo/kl"], 3) for r in rows if "ppo/kl" in r]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=32, help="pairs DPO / ORPO train (and are measured) on")
    parser.add_argument("--held-out", type=int, default=60, help="pairs the reward model never sees")
    parser.add_argument("--reward-steps", type=int, default=60)
    parser.add_argument("--ppo-steps", type=int, default=3)
    parser.add_argument("--only", nargs="+", default=["dpo", "orpo", "reward", "ppo"])
    parser.add_argument("--out", default="work_dirs/preference_demo")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from transformers import AutoTokenizer

    if not DATA.is_file():
        print(f"Error: {DATA} not found (set XTUNE_SHARED_DIR)", file=sys.stderr)
        return 2
    model = smollm2()
    tokenizer = AutoTokenizer.from_pretrained(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trained, held, rest = split_pairs(tokenizer, args.pairs, args.held_out)
    report = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
              "model": model, "data": str(DATA), "max_length": MAX_LENGTH}
    train_file = out / "train_pairs.json"
    train_file.write_text(json.dumps(trained), encoding="utf-8")
    batches = pair_batches(trained, tokenizer, out)
    for objective in [o for o in ("dpo", "orpo") if o in args.only]:
        lr = {"dpo": 5e-4, "orpo": 5e-4}[objective]
        run = train(objective, model, train_file, out / objective, args.steps, 2, lr)
        run["trained_pairs"] = implicit_rewards(model, out / objective / "hf", batches, objective)
        report[objective] = run
        print(json.dumps({objective: run}), flush=True)
    if "reward" in args.only:
        reward_file = out / "reward_pairs.json"
        reward_file.write_text(json.dumps(rest + trained), encoding="utf-8")
        run = train("reward", model, reward_file, out / "reward", args.reward_steps, 4, 2e-4)
        run["held_out"] = reward_accuracy(out / "reward" / "hf", pair_batches(held, tokenizer, out))
        report["reward"] = run
    if "ppo" in args.only and (out / "reward" / "hf").is_dir():
        report["ppo"] = ppo(model, out / "reward" / "hf", held, out / "ppo", args.ppo_steps)
    print(json.dumps(report, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
