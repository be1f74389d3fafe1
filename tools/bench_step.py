"""`bench.py step`: where one training step of a real model goes, and what each engine choice buys.

One packed 512-token row of real alpaca records (xtune's own data pipeline and packing), SmolLM2-135M-
Instruct with the recipe's LoRA, timed forward + backward + optimizer step in one process, each variant
interleaved with the others over several rounds (the median of its rounds is reported, so drift in the
machine's load hits every variant alike). Variants:

- `labelled logits`: the output layer only at positions that predict a label (xtune's loss) against the
  model's own loss over every position;
- `bf16` against `fp32` on this CPU;
- `eager` against `sdpa` attention for packed rows.
"""

from __future__ import annotations

import statistics
import time


def packed_row(model_dir: str, data: str, max_length: int = 512):
    from transformers import AutoTokenizer

    from xtune.data.pipeline import build_train_dataset
    from xtune.plugins import get_registry

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = dict(dataset_map="alpaca", data_path=data, prompt_template="smollm2_chat", max_length=max_length,
               pack_to_max_length=True, seed=0)
    rows = build_train_dataset(cfg, tokenizer, registry=get_registry(), progress=False, use_cache=False)
    return max(rows, key=lambda r: len(r["input_ids"]))  # the fullest row


def build(model_dir: str, attn: str, dropout: float = 0.1):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attn)
    model.config.use_cache = False
    model = get_peft_model(model,
                           LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def step_fn(model, optimizer, row, *, precision: str, labelled: bool):
    import torch

    from xtune.engine.model import labelled_token_loss

    ids = torch.tensor([row["input_ids"]])
    labels = torch.tensor([row["labels"]])
    kwargs = dict(input_ids=ids, position_ids=torch.tensor([row["position_ids"]]), use_cache=False)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = labelled_token_loss(model, labels, kwargs) if labelled else model(**kwargs,
        labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def run(model_dir: str, data: str, rounds: int = 5, log=print) -> dict:
    from xtune.hardware import cpu_bf16

    row = packed_row(model_dir, data)
    variants = {"xtune (labelled logits, sdpa)": ("sdpa", True), "every position's logits": ("sdpa", False),
                "eager attention": ("eager", True)}
    precisions = ["float32"] + (["bfloat16"] if cpu_bf16().native else [])
    times: dict[str, list[float]] = {}
    built = {"sdpa": build(model_dir, "sdpa"), "eager": build(model_dir, "eager")}
    steps = {}
    for precision in precisions:
        for name, (attn, labelled) in variants.items():
            steps[f"{name}, {precision}"] = step_fn(*built[attn], row, precision=precision, labelled=labelled)
    for step in steps.values():
        step()  # warm-up: kernels, allocator
    for r in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times.setdefault(name, []).append(time.perf_counter() - start)
        log(f"round {r + 1}/{rounds} done")
    labelled = sum(1 for x in row["labels"][1:] if x != -100)
    return {"tokens": len(row["input_ids"]), "labelled": labelled, "bf16_native": cpu_bf16().native,
            "seconds": {k: statistics.median(v) for k, v in times.items()}, "rounds": rounds}


def markdown(result: dict) -> str:
    from bench_report import context_lines, table

    seconds = result["seconds"]
    best = min(seconds.values())
    rows = [[name, s, f"{s / best:.2f}x", result["tokens"] / s] for name, s in seconds.items()]
    return "\n".join(["## One training step: what each choice buys", "", *context_lines(result), "",
                      f"One packed row of {result['tokens']} tokens ({result['labelled']} of them labelled), "
                      "SmolLM2-135M-Instruct with the recipe's LoRA (r 64, alpha 16, dropout 0.1, all linear "
                      f"layers); median of {result['rounds']} interleaved rounds.", "",
                      table(["variant", "s per step", "vs fastest", "tokens/s"], rows), ""])
