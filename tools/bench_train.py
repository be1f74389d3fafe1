"""`bench.py train`: the same model, data and settings through xtune and TRL's SFTTrainer, side by side.

Three arms, each in a fresh process so imports, caches and peak memory do not leak between them:
(a) `xtune train RECIPE --cfg-options ...` (the CLI's own entry point, run in-process by the worker so a
timer can be attached to the runner), (b) TRL `SFTTrainer` with its defaults, (c) the same with
`packing=True`. A fourth process measures the untrained model, so the table shows how far training
moved the held-out loss.

What is held equal: base model, the training records (the same file, rendered into the same prompt and
answer text by xtune's chat template, so TRL trains on byte-identical text), max_length, learning rate,
seed, epochs, and sequences per optimizer step (8: TRL's default batch; xtune takes its default micro-batch
of 1 with 8 accumulation steps). Everything else is each tool's default.

What is measured: trained tokens (labels that are not -100: the answer tokens each arm actually trains
on) per second of the training loop (first step's start to last step's end, excluding model loading,
data preparation and the final save), the process's wall time, peak memory, and afterwards the loss on a
held-out set (records never trained on, tokenized once by xtune's pipeline, scored by `heldout_loss` in
exactly the same way for all arms).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_common import TOOLS, offline_env, run_arm, shared_dir, tiny_model

ARMS = ("xtune", "trl", "trl_packed")
ARM_LABELS = {"base": "untrained model", "xtune": "xtune (recipe defaults, packing)",
              "trl": "TRL SFTTrainer defaults", "trl_packed": "TRL SFTTrainer packing=True"}
SEQUENCES_PER_STEP = 8  # TRL's default per_device_train_batch_size


def profiles(quick: bool, device: str) -> list[dict]:
    """The runs of one benchmark: each a model with its recipe, data and settings."""
    alpaca = shared_dir() / "data" / "alpaca"
    if device == "cuda":
        from bench_gpu import gpu_profiles

        return gpu_profiles(quick, alpaca)
    # Full fine-tuning: almost all of the tiny model's weights are its embedding and output layers, which
    # LoRA leaves frozen, so LoRA would leave the held-out loss flat and the quality check empty.
    if quick:
        return [dict(name="llama2-tiny", model=str(tiny_model()), recipe="llama2_7b_chat_full_alpaca_e3",
                     template="llama2_chat", method="full",
                     data=str(alpaca / "llamafactory_alpaca_en_demo.json"),
                     train_records=128, heldout_records=32, max_length=1024, lr=1e-3, seed=0, epochs=1)]
    # The real-model default: SmolLM2-135M-Instruct with the recipe's LoRA (r 64, alpha 16, dropout 0.1,
    # all linear layers) on real alpaca records, every arm at the precision this machine computes fastest.
    smollm2 = smollm2_dir()
    if smollm2 is None:
        raise SystemExit("Error: bench.py train needs SmolLM2-135M-Instruct: run tools/get_smollm2.py "
                         "(or set XTUNE_SMOLLM2_DIR), or use --quick for the tiny model")
    return [dict(name="smollm2-135m-lora", model=str(smollm2), recipe="smollm2_135m_instruct_lora_alpaca_e3",
                 template="smollm2_chat", method="lora",
                 data=str(alpaca / "llamafactory_alpaca_en_demo.json"),
                 train_records=48, heldout_records=32, max_length=512, lr=2e-4, seed=0, epochs=1)]


def smollm2_dir() -> Path | None:
    """SmolLM2-135M-Instruct in HF format: `XTUNE_SMOLLM2_DIR`, else what `tools/get_smollm2.py` prints
    (it converts the GGUF from PyPI once and caches the folder); None when neither is available."""
    env = os.environ.get("XTUNE_SMOLLM2_DIR")
    if env and (Path(env) / "config.json").is_file():
        return Path(env)
    getter = TOOLS / "get_smollm2.py"
    if not getter.is_file():
        return None
    out = subprocess.run([sys.executable, str(getter)], capture_output=True, text=True, env=offline_env())
    lines = [x.strip() for x in out.stdout.splitlines() if x.strip()]
    if out.returncode == 0 and lines and (Path(lines[-1]) / "config.json").is_file():
        return Path(lines[-1])
    print(f"SmolLM2-135M unavailable (tools/get_smollm2.py exited {out.returncode}): "
          f"{out.stderr.strip()[-300:]}", file=sys.stderr)
    return None


def split_records(src: str, n_train: int, n_heldout: int, out_dir: Path) -> tuple[Path, Path]:
    """The first `n_train` records to train on and the last `n_heldout` to score, as two JSON files."""
    records = json.loads(Path(src).read_text(encoding="utf-8"))
    if n_train + n_heldout > len(records):
        n_train = len(records) - n_heldout
    train, heldout = records[:n_train], records[len(records) - n_heldout:]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.json", out_dir / "heldout.json"
    for path, part in zip(paths, (train, heldout), strict=True):
        path.write_text(json.dumps(part, ensure_ascii=False), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------ inside a worker process


def worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    arm = spec["arm"]
    if spec.get("kind") == "data":
        from bench_data import worker as data_worker

        result = data_worker(spec)
    elif arm == "xtune":
        result = train_xtune(spec)
    elif arm in ("trl", "trl_packed"):
        result = train_trl(spec, packing=arm == "trl_packed")
    elif arm == "base":
        result = score_base(spec)
    else:
        raise SystemExit(f"unknown arm {arm!r}")
    Path(spec["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def heldout_rows(spec: dict, tokenizer) -> list[dict]:
    """The held-out records tokenized by xtune's pipeline (unpacked; labels on the answers only)."""
    from xtune.data import build_train_dataset
    from xtune.plugins import get_registry

    cfg = dict(dataset_map="alpaca", data_path=spec["heldout"], prompt_template=spec["template"],
               max_length=spec["max_length"], pack_to_max_length=False)
    data = build_train_dataset(cfg, tokenizer, registry=get_registry(), progress=False, use_cache=False)
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in data]


def heldout_loss(model, rows: list[dict]) -> float:
    """Mean cross-entropy per trained token over `rows`, one row at a time, no dropout, no autocast.

    Identical for every arm: the score never depends on a tool's own loss code, batching or padding.
    """
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]], device=device)
            labels = torch.tensor(row["labels"][1:], device=device)
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            total += float(F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    model.train(was_training)
    return total / max(count, 1)


def token_counts(dataset) -> tuple[int, int]:
    """(tokens that carry a label, all tokens) of a processed training set; padding is added later by the
    collators, so neither count includes it."""
    trained = sum(sum(1 for x in labels if x != -100) for labels in dataset["labels"])
    return trained, sum(len(ids) for ids in dataset["input_ids"])


def _finish(spec: dict, *, train_s: float, loop_s: float, tokens: int, rows: int, steps: int, model,
            tokenizer, train_loss: float | None, extra: dict | None = None) -> dict:
    peak = peak_memory_mib(spec.get("device", "cpu"))
    epochs = spec.get("epochs", 1)
    trained, seen = tokens[0] * epochs, tokens[1] * epochs
    return {"arm": spec["arm"], "label_tokens": trained, "input_tokens": seen, "rows": rows,
            "optimizer_steps": steps, "train_loop_s": loop_s, "train_call_s": train_s,
            "tokens_per_s": trained / loop_s if loop_s else None,
            "input_tokens_per_s": seen / loop_s if loop_s else None,
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peak_memory_mib": peak, "train_loss": train_loss,
            "heldout_loss": heldout_loss(model, heldout_rows(spec, tokenizer)), **(extra or {})}


def score_base(spec: dict) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype="auto")
    if spec.get("device") == "cuda":
        model = model.to("cuda")
    return {"arm": "base", "heldout_loss": heldout_loss(model, heldout_rows(spec, tokenizer)),
            "peak_memory_mib": peak_memory_mib(spec.get("device", "cpu")),
            "params_total": sum(p.numel() for p in model.parameters())}


def xtune_argv(spec: dict) -> list[str]:
    """`xtune train` arguments: the recipe with the settings the arms share, and no side work at the end."""
    accumulation = SEQUENCES_PER_STEP // int(spec.get("xtune_batch_size", 1))
    options = [f"pretrained_model_name_or_path={spec['model']}", f"data_path={spec['train']}",
               f"max_length={spec['max_length']}", f"lr={spec['lr']}", f"max_epochs={spec['epochs']}",
               f"batch_size={spec.get('xtune_batch_size', 1)}", f"accumulative_counts={accumulation}",
               f"prompt_template={spec['template']}", "evaluation_inputs=[]", "save_steps=0",
               "export_hf=False", "plot_loss=False", *spec.get("xtune_options", [])]
    if spec.get("precision"):
        options.append(f"optim_wrapper.dtype={spec['precision']}")
    return ["train", spec["recipe"], "--work-dir", spec["work_dir"], "--seed", str(spec["seed"]),
            "--cfg-options", *options]


def train_xtune(spec: dict) -> dict:
    """Run the `xtune train` CLI in this process, with a loop timer attached to its mmengine runner."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    seen: dict = {}

    class LoopTimer(Hook):
        """First iteration's start to last iteration's end (runs before xtune's own hooks)."""

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            seen.setdefault("start", time.perf_counter())

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            seen["end"] = time.perf_counter()

    original = Runner.train

    def timed_train(self):
        self.register_hook(LoopTimer(), priority="VERY_HIGH")
        seen["runner"] = self
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            seen["call"] = time.perf_counter() - start

    Runner.train = timed_train
    from xtune.cli.main import main

    code = main(xtune_argv(spec))
    if code:
        raise SystemExit(f"xtune train exited {code}")
    runner = seen["runner"]
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    dataset = runner.train_dataloader.dataset
    history = Path(spec["work_dir"]) / "loss_history.json"
    losses = json.loads(history.read_text())["train"] if history.is_file() else []
    return _finish(spec, train_s=seen["call"], loop_s=seen["end"] - seen["start"],
                   tokens=token_counts(dataset),
                   rows=len(dataset), steps=runner.iter, model=model.llm,  # the loop counts optimizer steps
                   tokenizer=_tokenizer(spec), train_loss=losses[-1]["loss"] if losses else None,
                   extra={"fill_ratio": _fill(dataset, spec["max_length"])})


def _tokenizer(spec: dict):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec["model"])


def _fill(dataset, max_length: int) -> float:
    lengths = [len(x) for x in dataset["input_ids"]]
    return sum(lengths) / (len(lengths) * max_length) if lengths else 0.0


def prompt_completion_records(spec: dict, tokenizer) -> list[dict]:
    """The training records as TRL prompt/completion text, rendered by xtune's template (same bytes).

    The prompt is everything before the first trained segment, the completion the rest. When the
    tokenizer adds BOS itself (TRL tokenizes plain text with special tokens), the template's BOS text is
    left out of the prompt (else TRL would train on two BOS). The sequences then have the same length and
    trained tokens as xtune's; with SentencePiece only the first prompt piece differs ("▁[" for "[").
    """
    from xtune.data.pipeline import load_conversations, render_conversations
    from xtune.plugins import get_registry

    registry = get_registry()
    cfg = dict(dataset_map="alpaca", data_path=spec["train"], prompt_template=spec["template"])
    conversations, wheres, _ = load_conversations(cfg, registry=registry, progress=False)
    adds_bos = tokenizer.bos_token_id is not None and tokenizer(
        "a")["input_ids"][:1] == [tokenizer.bos_token_id]
    records = []
    for segments in render_conversations(conversations, wheres, spec["template"], registry=registry):
        first = next(i for i, s in enumerate(segments) if s["train"])
        prompt = "".join(s["text"] for s in segments[:first])
        if adds_bos and tokenizer.bos_token and prompt.startswith(tokenizer.bos_token):
            prompt = prompt[len(tokenizer.bos_token):]
        records.append({"prompt": prompt, "completion": "".join(s["text"] for s in segments[first:])})
    return records


def train_trl(spec: dict, packing: bool) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    data = Dataset.from_list(prompt_completion_records(spec, tokenizer))
    seen: dict = {}

    class LoopTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.setdefault("start", time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            seen["end"] = time.perf_counter()

    # use_cpu: without it TRL's default bf16 refuses to start on a CPU-only machine.
    device_args = {"use_cpu": True} if spec.get("device", "cpu") == "cpu" else {}
    peft_config = None
    if spec.get("method") in ("lora", "qlora"):
        from bench_gpu import lora_config, trl_model_kwargs

        peft_config = lora_config()
        device_args["model_init_kwargs"] = trl_model_kwargs(spec)
    if spec.get("precision"):  # the same precision as the xtune arm (TRL's default is bf16 everywhere)
        device_args["bf16"] = spec["precision"] == "bfloat16"
    args = SFTConfig(output_dir=spec["work_dir"], learning_rate=spec["lr"], seed=spec["seed"],
                     max_length=spec["max_length"], num_train_epochs=spec["epochs"], packing=packing,
                     report_to="none", save_strategy="no", disable_tqdm=True, **device_args)
    trainer = SFTTrainer(model=spec["model"], args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[LoopTimer()])
    start = time.perf_counter()
    out = trainer.train()
    call = time.perf_counter() - start
    dataset = trainer.train_dataset
    extra = {"fill_ratio": _fill(dataset, spec["max_length"])} if packing else {}
    return _finish(spec, train_s=call, loop_s=seen["end"] - seen["start"], tokens=token_counts(dataset),
                   rows=len(dataset), steps=trainer.state.global_step, model=trainer.model,
                   tokenizer=tokenizer,
                   train_loss=float(out.training_loss), extra=extra)


# ---------------------------------------------------------------------------------------- in the parent


def run_profile(profile: dict, out_dir: Path, device: str = "cpu", log=print) -> dict:
    """All arms of one profile, then the ratios and the held-out comparison."""
    train_file, heldout_file = split_records(profile["data"], profile["train_records"],
                                             profile["heldout_records"], out_dir / "data")
    base_spec = dict(profile, train=str(train_file), heldout=str(heldout_file), device=device)
    if device == "cpu":
        from xtune.hardware import choose_precision

        precision = choose_precision("auto")
        base_spec["precision"] = profile["precision"] = precision.name
        log(f"[{profile['name']}] {precision}")
    arms: dict[str, dict] = {}
    for arm in ("base", *ARMS):
        log(f"[{profile['name']}] {ARM_LABELS[arm]} ...")
        env = {"XTUNE_CACHE_DIR": str(out_dir / "xtune-cache"), "HF_HOME": str(out_dir / "hf-home")}
        arms[arm] = run_arm(dict(base_spec, arm=arm, env=env), out_dir / arm)
        done = arms[arm]
        log(f"[{profile['name']}]   " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in done.items() if k != "arm"))
    result = summarize(profile, arms)
    if device == "cpu":
        result["matmul_peak"] = matmul_peak(profile["model"], profile["max_length"], profile["precision"])
        add_flops(result)
    return result


def matmul_peak(model_dir: str, tokens: int, precision: str) -> dict:
    """The best FLOP/s of one matmul of the model's own largest shape (tokens x hidden @ hidden x
    intermediate) in the run's precision, measured now: the ceiling the training arms are held against."""
    import json as _json

    import torch

    config = _json.loads((Path(model_dir) / "config.json").read_text())
    hidden, inner = config["hidden_size"], config.get("intermediate_size", 4 * config["hidden_size"])
    dtype = getattr(torch, precision)
    a, b = torch.randn(tokens, hidden, dtype=dtype), torch.randn(hidden, inner, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(20))
    return {"shape": [tokens, hidden, inner], "precision": precision,
            "flops_per_s": 2 * tokens * hidden * inner / best}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def add_flops(result: dict) -> None:
    """Achieved model FLOP/s of each arm (6 per trained and 4 per frozen parameter per input token: the
    forward and backward matmuls) and its share of the measured matmul peak."""
    arms = result["arms"]
    total = arms.get("base", {}).get("params_total")
    peak = result["matmul_peak"]["flops_per_s"]
    for arm in ARMS:
        r = arms.get(arm)
        if not r or not total or not r.get("input_tokens_per_s"):
            continue
        per_token = 6 * r["params_trainable"] + 4 * (total - r["params_trainable"])
        r["flops_per_s"] = per_token * r["input_tokens_per_s"]
        r["share_of_matmul_peak"] = r["flops_per_s"] / peak


def summarize(profile: dict, arms: dict[str, dict]) -> dict:
    """Ratios of trained tokens/s and whether each TRL arm's held-out loss is within 5 % of xtune's."""

    def ratio(a: str, b: str) -> float | None:
        x, y = arms.get(a, {}).get("tokens_per_s"), arms.get(b, {}).get("tokens_per_s")
        return x / y if x and y else None

    xt = arms.get("xtune", {}).get("heldout_loss")
    gaps = {arm: abs(arms[arm]["heldout_loss"] - xt) / xt for arm in ("trl", "trl_packed")
            if arm in arms and xt}
    return {"profile": profile["name"], "settings": {k: v for k, v in profile.items() if k != "env"},
            "arms": arms, "ratio": ratio("xtune", "trl"), "ratio_packed": ratio("xtune", "trl_packed"),
            "heldout_gap": gaps, "heldout_comparable": bool(gaps) and all(g <= 0.05 for g in gaps.values()),
            "heldout_improvement": improvement(arms)}


def improvement(arms: dict[str, dict]) -> dict[str, float]:
    """How far training moved each arm's held-out loss below the untrained model's. A tool that learns
    nothing must not pass the 5 % check just because no arm moved far (e.g. a broken lr schedule)."""
    base = arms.get("base", {}).get("heldout_loss")
    return {arm: base - arms[arm]["heldout_loss"] for arm in ARMS
            if base is not None and arms.get(arm, {}).get("heldout_loss") is not None}


def markdown(result: dict) -> str:
    from bench_report import context_lines, table

    lines = ["## Training: xtune vs TRL SFTTrainer", "", *context_lines(result), ""]
    for run in result["runs"]:
        s = run["settings"]
        lines += [f"### {run['profile']}: {Path(s['model']).name}, {s['method']} fine-tuning, "
                  f"{Path(s['data']).name} ({s['train_records']} records, {s['heldout_records']} held out), "
                  f"max_length {s['max_length']}, lr {s['lr']}, seed {s['seed']}, {s['epochs']} epoch(s), "
                  f"{SEQUENCES_PER_STEP} sequences per optimizer step", ""]
        rows = []
        for arm in ("base", *ARMS):
            r = run["arms"].get(arm)
            if r is None:
                continue
            share = r.get("share_of_matmul_peak")
            rows.append([ARM_LABELS[arm], r.get("tokens_per_s"), r.get("label_tokens"), r.get("rows"),
                         r.get("optimizer_steps"), r.get("fill_ratio"), r.get("train_loop_s"),
                         r.get("wall_s"),
                         r.get("peak_memory_mib"), _loss(r.get("heldout_loss")),
                         None if r.get("flops_per_s") is None else r["flops_per_s"] / 1e9,
                         None if share is None else f"{share:.0%}"])
        lines.append(table(["arm", "trained tokens/s", "trained tokens", "rows", "optimizer steps", "fill",
                            "train loop s", "process wall s", "peak memory MiB", "held-out loss",
                            "model GFLOP/s", "of matmul peak"], rows))
        if run.get("matmul_peak"):
            mp = run["matmul_peak"]
            lines += ["", f"Precision of every arm: {s.get('precision')}. Matmul peak measured in this run: "
                      f"{mp['flops_per_s'] / 1e9:.0f} GFLOP/s ({mp['precision']}, "
                      f"{' x '.join(map(str, mp['shape']))}, the model's largest matmul)."]
        gaps = ", ".join(f"{ARM_LABELS[a]} {g:.1%}" for a, g in run["heldout_gap"].items())
        moved = run.get("heldout_improvement") or improvement(run["arms"])
        if moved:
            lines += ["", "Held-out loss drop from the untrained model: "
                      + ", ".join(f"{ARM_LABELS[a]} {d:.4f}" for a, d in moved.items()) + "."]
            still = [ARM_LABELS[a] for a, d in moved.items() if d <= 1e-5]
            if still:
                lines += [f"**Warning:** {', '.join(still)} did not lower the held-out loss at all: its "
                          "speed is not backed by learning in this run."]
        lines += ["", f"**ratio** (xtune ÷ TRL default, trained tokens/s) = {_r(run['ratio'])}; "
                  f"**ratio_packed** (xtune ÷ TRL packing) = {_r(run['ratio_packed'])}; held-out loss gap to "
                  f"xtune: {gaps} ({'comparable' if run['heldout_comparable'] else 'NOT within 5 %'}).", ""]
    return "\n".join(lines)


def _loss(value) -> str | None:
    return None if value is None else f"{value:.4f}"  # 4 decimals: the arms differ in the 3rd or 4th digit


def _r(value) -> str:
    return "–" if value is None else f"{value:.2f}"
