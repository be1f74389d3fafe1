"""The estimate as a table for people and as JSON for tools (`xtune estimate --json`)."""

from __future__ import annotations

from xtune.estimate.memory import Estimate, GiB


def _gib(value: float) -> str:
    return f"{value / GiB:8.2f}"


def describe_plan(est: Estimate) -> str:
    p = est.plan
    devices = f"{p.num_devices} x {p.device}"
    offload = " + offload" if p.offload_optimizer or p.offload_params else ""
    zero = f"DeepSpeed ZeRO-{p.deepspeed_stage}{offload}" if p.deepspeed_stage else "no DeepSpeed"
    precision = "bf16 autocast" if p.compute_bytes == 2 else "fp32"
    checkpointing = "on" if p.gradient_checkpointing else "off"
    shards = (f" (sequence parallel {p.sequence_parallel}: {p.seq_len // p.sequence_parallel} per device)"
              if p.sequence_parallel > 1 else "")
    return (f"{devices}, {zero}; micro-batch {p.batch_size} x {p.seq_len} tokens{shards}, accumulation "
            f"{p.accumulation}; {precision}; gradient checkpointing {checkpointing}; {p.attention}")


def table(est: Estimate, title: str) -> str:
    """Rows of GiB per device, the peak, and the rule of thumb beside it."""
    a, p = est.arch, est.plan
    method = p.method + (f" r={p.lora_rank}" if p.lora_rank else "") + (f", {p.load_in_bits}-bit base"
                                                                        if p.load_in_bits else "")
    method += f", objective {p.objective}" if p.objective != "sft" else ""
    lines = [f"{title}: {a.params / 1e9:.3g} B parameters ({a.source})",
             f"  {method}; {describe_plan(est)}", "",
             f"  {'per device':<34}{'GiB':>8}  notes"]
    c = est.components
    other = "without" if p.gradient_checkpointing else "with"
    attention = (f"attention keeps {est.attention_bytes / GiB:.2f}; eager attention would add "
                 f"{est.eager_attention_bytes / GiB:.2f}" if p.attention != "eager" else
                 f"eager attention's softmax: {est.eager_attention_bytes / GiB:.2f}")
    rows = [
        ("weights", c["weights"], est.notes["weights"]),
        ("trainable parameters", None, f"{est.trainable / 1e9:.2f} B" if est.trainable >= 1e9
         else f"{est.trainable / 1e6:,.1f} M"),
        ("gradients", c["gradients"], est.notes.get("gradients", "")),
        ("optimizer states", c["optimizer states"], est.notes["optimizer states"]
         + (" (offloaded to CPU)" if p.offload_optimizer else "")),
        ("activations", c["activations"],
         f"{other} checkpointing: {est.activations_other / GiB:.2f}; {attention}"),
        ("logits and loss", c["logits and loss"], "one score per sequence (reward model)" if p.score_head
         else f"fp32 log-softmax at labelled positions ({p.labelled_share:.0%} of tokens), its gradients"),
        ("autocast copies", c["autocast copies"], "16-bit copies of fp32 matmul weights, kept for backward"),
        ("DeepSpeed buffers", c["DeepSpeed buffers"], "gradient reduction buckets"),
        ("frozen models", c.get("frozen models"), f"{p.objective}: reference copy and/or reward model, "
         f"{p.frozen_params / 1e9:.3g} B params"),
        ("KV cache (generation)", c.get("KV cache (generation)"), f"{p.objective}: the group's keys and "
         "values while it is sampled; freed before the update (the peak counts the larger)"),
        ("CPU runtime", c.get("CPU runtime"), "Python, torch and libraries, tokenizer, data (measured)"),
        ("CPU heap retention", c.get("CPU heap retention"),
         "freed activation memory glibc keeps (measured share)"),
    ]
    for name, value, note in rows:
        if value is None and name != "trainable parameters":
            continue
        if value == 0 and name in ("autocast copies", "DeepSpeed buffers", "frozen models",
                                   "KV cache (generation)"):
            continue
        shown = " " * 8 if value is None else _gib(value)
        lines.append(f"  {name:<34}{shown}  {note}".rstrip())
    peak_note = ("gradients and activations coexist (accumulation)" if p.accumulation > 1 else
                 "the larger of activations (forward) and gradients (backward)")
    if p.device == "cpu" and est.load_peak >= est.total:
        peak_note = "loading: checkpoint pages and weights together"
    lines.append(f"  {'peak':<34}{_gib(est.total)}  {peak_note}")
    if est.offloaded:
        lines.append(f"  {'in CPU memory (offload)':<34}{_gib(est.offloaded)}")
    if p.device == "cuda":
        lines.append(f"  {'':<34}{'':8}  plus the CUDA context and allocator cache (about 0.5-1 GiB)")
    thumb = "5 x 16-bit weights" if p.method in ("full", "freeze") else "16-bit weights"
    lines.append(f"  {'rule of thumb (' + thumb + ')':<34}{_gib(est.rule_of_thumb)}")
    return "\n".join(lines)


def as_json(est: Estimate, title: str) -> dict:
    from dataclasses import asdict

    return {"model": title, "architecture": asdict(est.arch), "plan": asdict(est.plan),
            "parameters": est.arch.params, "trainable_parameters": est.trainable,
            "bytes": {**est.components, "peak": est.total, "offloaded_to_cpu": est.offloaded,
                      "activations_with_checkpointing_flipped": est.activations_other,
                      "attention": est.attention_bytes, "eager_attention": est.eager_attention_bytes,
                      "cpu_load_phase": est.load_peak, "cpu_save_phase": est.save_peak,
                      "rule_of_thumb": est.rule_of_thumb}}
