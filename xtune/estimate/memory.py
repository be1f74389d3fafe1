"""The memory model: what one training process holds, term by term, from the architecture and the plan.

Every term is a count of tensors and their widths, in bytes (docs/estimate.md derives each one):
- weights: every parameter in its storage type; 4-bit NF4 as bitsandbytes stores it (half a byte per
  weight, plus one 8-bit absmax per 64 weights and, with double quantisation, one fp32 constant per 256 of
  those); the parameters bitsandbytes leaves alone (embeddings, norms, the output layer) in fp32, because
  peft's k-bit preparation casts them; adapter weights in fp32 (peft keeps them there);
- gradients: one per trainable parameter, in its type; optimizer: AdamW's two moments in the parameter's
  type (DeepSpeed adds an fp32 master copy: 12 bytes a parameter), 8-bit optimizers 2 bytes;
- activations, per token and decoder layer: the tensors autograd keeps for the backward pass (the norms'
  fp32 inputs, q/k/v, the rotary outputs, the attention output, the MLP's four intermediate-wide tensors;
  LoRA's inputs and its fp32 dropout outputs), all layers at once, or with checkpointing one layer plus
  each layer's input; eager attention adds its softmax (batch x heads x length^2); fused attention keeps
  only a log-sum-exp per head;
- logits and loss: the fp32 log-softmax kept for backward, its gradient and the logits' gradient, at the
  positions that carry a label (all of them unless the plan says otherwise: the upper bound);
- autocast copies: fp32 weights under bf16 autocast are cast once per forward and the copies are kept
  for backward (2 bytes per matmul weight).
Gradients are freed after each optimizer step, so without accumulation the peak is the larger of the
forward's end (activations) and the backward's end (gradients); with accumulation they coexist.
DeepSpeed ZeRO divides optimizer states (stage 1), gradients (2) and weights (3) by the device count, and
offload moves them to CPU memory.

On a CPU the resident set also holds the process's runtime (measured, `CPU_RUNTIME_BYTES`), and glibc's
heap keeps part of the memory the many mid-sized activation tensors leave behind (`CPU_HEAP_RETENTION`,
measured); loading maps the checkpoint files while the weights are built. Saving adds nothing: xtune's
checkpoints are written by safetensors straight from the tensors (measured: writing 1 GiB of tensors
leaves the peak resident set where it was), no longer pickled into memory first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xtune.estimate.architecture import Architecture
from xtune.estimate.lowmem import LOW_MEMORY, low_memory_terms
from xtune.estimate.objective import kv_cache_bytes

GiB = 2**30
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weight + 8-bit absmax per 64 + fp32 per 256 absmax blocks
NF4_BYTES_PLAIN = 0.5 + 4 / 64  # without double quantisation: an fp32 absmax per 64 weights
DEEPSPEED_BUCKET = 5 * 10**8  # DeepSpeed's default reduce_bucket_size, in elements
# RSS of a CPU training process before the model loads: Python, torch, transformers, peft, bitsandbytes,
# mmengine, datasets, the tokenizer and the tokenized data. Measured by `tools/bench.py estimate`
# (docs/benchmarks.md) on the machine it names; CUDA runs have no such term in max_memory_allocated.
CPU_RUNTIME_BYTES = int(0.56 * GiB)
# Share of the activations and autocast copies (tensors under glibc's 32 MiB mmap threshold, served from its
# heap) that stays resident beyond the live peak: freed blocks are kept for reuse but fragment. Measured by
# `tools/bench.py estimate` as the peak with glibc's defaults minus the peak of the same run with
# MALLOC_MMAP_THRESHOLD_=65536 (every block returned when freed): 0.33 and 0.35 of those bytes for SmolLM2
# full and LoRA tuning.
CPU_HEAP_RETENTION = 1 / 3


@dataclass(frozen=True)
class Plan:
    """How a run trains, as the estimate needs it (xtune.estimate.settings builds it from a recipe)."""

    method: str = "lora"
    lora_rank: int = 0  # 0: not a LoRA-family method
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ()  # empty: all linear layers
    trainable_layers: int = 0  # freeze tuning: the last N decoder layers train
    method_rank: int = 0  # GaLore / APOLLO: the projection's rank
    activated_layers: int = 0  # LISA: decoder layers sampled to train at a time
    load_in_bits: int | None = None
    double_quant: bool = True
    device: str = "cuda"
    weight_bytes: int = 2  # storage type of the (unquantised) weights
    compute_bytes: int = 2  # 2 under bf16/fp16 autocast, 4 without
    optimizer: str = "AdamW"
    batch_size: int = 1
    seq_len: int = 2048
    sequence_parallel: int = 1  # devices that share each row: each keeps seq_len / N tokens of it
    accumulation: int = 1
    gradient_checkpointing: bool = False
    attention: str = "sdpa"  # sdpa | flash_attention_2 | eager
    deepspeed_stage: int = 0
    offload_optimizer: bool = False
    offload_params: bool = False
    num_devices: int = 1
    checkpoint_bytes: int = 2  # bytes per parameter of the checkpoint files (read at load, CPU only)
    labelled_share: float = 1.0  # share of tokens with a label: logits are computed at those positions only
    objective: str = "sft"  # a preference objective's rows are already in batch_size / seq_len
    frozen_params: int = 0  # parameters of frozen models beside the policy (a reference copy, a reward model)
    score_head: bool = False  # a reward model: one score per sequence, no vocabulary logits
    kv_cache: bool = False  # the rows are generated in the loop first (GRPO): their KV cache, then the update
    vision_params: int = 0  # a LLaVA composition's vision encoder (xtune.estimate.vision)
    projector_params: int = 0
    vision_trained: int = 0  # of the two, the parameters that train (the projector, the encoder if unfrozen)


@dataclass
class Estimate:
    """Bytes per device, by component, plus what lives in CPU memory (offload, the CPU runtime)."""

    arch: Architecture
    plan: Plan
    trainable: int
    components: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    activations_other: float = 0.0  # the activations with checkpointing flipped
    attention_bytes: float = 0.0  # attention's own share of the activations
    eager_attention_bytes: float = 0.0  # what eager attention would keep instead
    offloaded: float = 0.0  # bytes DeepSpeed keeps in CPU memory instead
    load_peak: float = 0.0  # CPU only: the loading phase (checkpoint pages + weights)
    save_peak: float = 0.0  # CPU only: while the final checkpoint is written (the training heap, no logits)
    total: float = 0.0
    rule_of_thumb: float = 0.0


def trainable_params(arch: Architecture, plan: Plan) -> int:
    """Parameters that get gradients and optimizer states."""
    if plan.method == "full" or plan.method in LOW_MEMORY:  # every weight trains over the run
        return arch.params
    if plan.method == "freeze":
        per_layer = (arch.linear_params + arch.norm_params) / arch.num_layers
        return int(per_layer * min(plan.trainable_layers, arch.num_layers))
    if plan.lora_rank:
        targets = lora_targets(arch, plan)
        dora = sum(linear.d_out * linear.count for linear in targets) if plan.method == "dora" else 0
        return plan.lora_rank * sum((linear.d_in + linear.d_out) * linear.count for linear in targets) + dora
    return 0  # prompt tuning, IA3, BitFit: a few thousand parameters at most


# Family spellings of fused or renamed projections, as the Llama-style names they stand for.
_QKV = ("q_proj", "k_proj", "v_proj")
_MODULE_ALIASES = {"wqkv": _QKV, "W_pack": _QKV, "query_key_value": _QKV, "qkv_proj": _QKV, "wo": ("o_proj",),
                   "dense": ("o_proj",), "w1": ("gate_proj",), "w3": ("up_proj",),
                   "w2": ("down_proj",), "gate_up_proj": ("gate_proj", "up_proj"),
                   "dense_h_to_4h": ("gate_proj", "up_proj"), "dense_4h_to_h": ("down_proj",)}


def lora_targets(arch: Architecture, plan: Plan):
    """The linear layers LoRA adapts: every one but the routed experts (transformers stores those as fused
    tensors, which peft's all-linear does not reach), or the named ones."""
    linears = [linear for linear in arch.linears() if not linear.expert]
    if not plan.lora_targets or "all-linear" in plan.lora_targets:
        return linears
    names = {alias for name in plan.lora_targets for alias in _MODULE_ALIASES.get(name, (name,))}
    return [linear for linear in linears if linear.name in names]


def weights_bytes(arch: Architecture, plan: Plan, trainable: int) -> tuple[float, str]:
    """The model's weights (plus LoRA adapters) and a note saying how they are stored."""
    other = arch.params - arch.linear_params
    adapters = trainable * 4 if plan.lora_rank else 0
    if plan.load_in_bits == 4:
        per = NF4_BYTES if plan.double_quant else NF4_BYTES_PLAIN
        note = f"{arch.linear_params / 1e9:.2f} B linear weights in NF4 ({per:.3f} B each), the rest in fp32"
        return arch.linear_params * per + other * 4 + adapters, note
    if plan.load_in_bits == 8:
        scales = sum(linear.d_out * linear.count for linear in arch.linears()) * 4
        return arch.linear_params + scales + other * 4 + adapters, "linear weights in int8, the rest in fp32"
    name = {4: "fp32", 2: "bf16/fp16"}[plan.weight_bytes]
    return arch.params * plan.weight_bytes + adapters, f"{arch.params / 1e9:.3g} B params in {name}"


def optimizer_bytes(trainable: int, param_bytes: int, plan: Plan) -> tuple[float, str]:
    name = plan.optimizer.lower()
    if "8bit" in name:
        return trainable * 2.0, f"{plan.optimizer}: two 8-bit moments"
    if plan.deepspeed_stage and param_bytes < 4:
        return trainable * 12.0, f"{plan.optimizer} under DeepSpeed: fp32 master copy + two fp32 moments"
    if name in ("sgd",):
        return trainable * float(param_bytes), "SGD: one momentum buffer"
    kind = "fp32" if param_bytes == 4 else "16-bit"
    return trainable * 2.0 * param_bytes, f"{plan.optimizer}: two moments in {kind}"


def layer_activation_bytes(arch: Architecture, plan: Plan) -> tuple[float, float]:
    """(bytes one decoder layer keeps per token, of which attention's own), as in the module docstring."""
    h, heads, kv, hd = arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.head_dim
    c = plan.compute_bytes
    width = arch.intermediate_size
    if arch.num_experts:  # tokens pass through their routed experts and the shared ones
        expert = arch.moe_intermediate_size or arch.intermediate_size
        width = expert * (arch.experts_per_token + arch.num_shared_experts)
    # RMSNorm computes in fp32 and keeps its input; when its weight trains it also keeps the normalised
    # input, which in 16-bit models is the bf16 tensor the projections read (already counted), in fp32
    # models a tensor of its own
    norm_copies = 2 if plan.method in ("full", "freeze", *LOW_MEMORY) and plan.weight_bytes == 4 else 1
    attention = c * heads * hd + 4 * heads  # its output, and the log-sum-exp of fused kernels
    # A quantised layer returns its output in its input's dtype, and peft's k-bit preparation makes the
    # residual stream fp32 (it casts the embeddings): projections (q/k/v, their rotary outputs, the MLP's
    # intermediates) are fp32 then, and attention keeps 16-bit copies of q, k and v besides.
    lin = residual_bytes(plan) if plan.load_in_bits else c
    kept = c * 2 * h + lin * ((heads + 2 * kv) * hd + (heads + kv) * hd + 4 * width) + attention
    if lin > c:
        kept += c * (heads + 2 * kv) * hd
    kept += 4 * 2 * h * norm_copies
    if plan.lora_rank:
        kept += c * (2 * h + heads * hd + width)  # each adapted input, cast for the adapters' matmuls
        if plan.lora_dropout:
            inputs = sum(linear.d_in * linear.count for linear in lora_targets(arch, plan))
            kept += 4 * inputs / arch.num_layers
    return kept, attention


def residual_bytes(plan: Plan) -> int:
    """The residual stream's dtype: the weights', or fp32 for a quantised base (its embeddings are)."""
    return 4 if plan.load_in_bits else plan.weight_bytes


def activation_bytes(arch: Architecture, plan: Plan, checkpointing: bool) -> tuple[float, float, float]:
    """(activations, attention's share, eager attention's share) for the whole micro-batch."""
    tokens = plan.batch_size * plan.seq_len / plan.sequence_parallel  # this device's shard of the rows
    per_token, attention = layer_activation_bytes(arch, plan)
    # eager attention: all positions, 1 / N of the heads (the all-to-all trades sequence for heads)
    eager = (plan.batch_size * arch.num_heads * plan.seq_len**2 * (4 + plan.compute_bytes) * arch.num_layers
             / plan.sequence_parallel)
    if plan.attention == "eager":
        attention = attention * tokens * arch.num_layers + eager
        per_layer = per_token * tokens + eager / arch.num_layers
    else:
        attention *= tokens * arch.num_layers
        per_layer = per_token * tokens
    if checkpointing:  # each layer's input stays; one layer's activations are rebuilt at a time
        inputs = arch.num_layers * tokens * arch.hidden_size * residual_bytes(plan)
        return inputs + per_layer, attention / arch.num_layers, eager
    return per_layer * arch.num_layers, attention, eager


def logits_bytes(arch: Architecture, plan: Plan) -> float:
    """The loss's fp32 log-softmax over the vocabulary, its gradient and the logits' gradient, at the
    positions that predict a label (xtune computes logits nowhere else); a reward model scores each
    sequence once."""
    tokens = plan.batch_size * plan.seq_len / plan.sequence_parallel
    if plan.score_head:
        return tokens * 4.0
    return tokens * plan.labelled_share * arch.vocab_size * 12.0


def autocast_copies(arch: Architecture, plan: Plan) -> float:
    """16-bit copies of fp32 matmul weights made by autocast and kept until backward (quantised layers
    run their own kernels: only the output projection, fp32 after peft's k-bit preparation, is copied)."""
    if plan.compute_bytes >= residual_bytes(plan):
        return 0.0
    matmul = arch.vocab_size * arch.hidden_size + (0 if plan.load_in_bits else arch.linear_params)
    return float(matmul * plan.compute_bytes)


def estimate(arch: Architecture, plan: Plan) -> Estimate:
    """Every term for one device, DeepSpeed's partitioning applied, and the peak they add up to."""
    trainable = trainable_params(arch, plan)
    param_bytes = 4 if plan.lora_rank else plan.weight_bytes  # adapters train in fp32
    devices, stage = max(plan.num_devices, 1), plan.deepspeed_stage
    weights, weights_note = weights_bytes(arch, plan, trainable)
    if plan.vision_params or plan.projector_params:  # unquantised, beside the language model
        parts = plan.vision_params + plan.projector_params
        weights += parts * plan.weight_bytes
        weights_note += f"; + vision encoder and projector {parts / 1e9:.3g} B"
        trainable += plan.vision_trained
    grads = float(trainable * param_bytes)
    optim, optim_note = optimizer_bytes(trainable, param_bytes, plan)
    notes = {"weights": weights_note}
    if plan.method in LOW_MEMORY:
        grads, optim, notes["gradients"], optim_note = low_memory_terms(arch, plan, lora_targets(arch, plan))
    acts, attention, eager = activation_bytes(arch, plan, plan.gradient_checkpointing)
    out = Estimate(arch, plan, trainable, notes={**notes, "optimizer states": optim_note})
    out.activations_other = activation_bytes(arch, plan, not plan.gradient_checkpointing)[0]
    out.attention_bytes, out.eager_attention_bytes = attention, eager
    if stage >= 1:
        optim /= devices
        if plan.offload_optimizer:
            out.offloaded, optim = out.offloaded + optim, 0.0
    if stage >= 2:
        grads /= devices
    if stage >= 3:
        layer = weights / arch.num_layers
        weights = weights / devices
        if plan.offload_params:
            out.offloaded, weights = out.offloaded + weights, 0.0
        weights += 2 * layer  # the layer being computed and the one being fetched, gathered whole
    buffers = 2.0 * min(DEEPSPEED_BUCKET, trainable) * param_bytes if stage >= 2 else 0.0
    forward = acts + logits_bytes(arch, plan) + autocast_copies(arch, plan)
    moving = grads + forward if plan.accumulation > 1 else max(forward, grads)
    out.components = {"weights": weights, "gradients": grads, "optimizer states": optim,
                      "activations": acts, "logits and loss": logits_bytes(arch, plan),
                      "autocast copies": autocast_copies(arch, plan), "DeepSpeed buffers": buffers,
                      "frozen models": float(plan.frozen_params * plan.weight_bytes),
                      "KV cache (generation)": kv_cache_bytes(arch, plan)}
    # the generation's cache is freed before the update's forward pass: the larger of the two counts
    out.total = weights + optim + buffers + max(moving, out.components["KV cache (generation)"]) \
        + out.components["frozen models"]
    if plan.device == "cpu":
        retained = CPU_HEAP_RETENTION * (acts + out.components["autocast copies"])
        out.components["CPU runtime"] = float(CPU_RUNTIME_BYTES)
        out.components["CPU heap retention"] = retained
        out.load_peak = CPU_RUNTIME_BYTES + weights + arch.params * plan.checkpoint_bytes
        training = out.total + CPU_RUNTIME_BYTES + retained
        # the heap keeps its size after training; the logits, too large for it, went back to the system
        out.save_peak = training - out.components["logits and loss"]  # safetensors writes without a copy
        out.total = max(training, out.load_peak)
    sixteen_bit = arch.params * 2.0
    out.rule_of_thumb = 5 * sixteen_bit if plan.method in ("full", "freeze", *LOW_MEMORY) else sixteen_bit
    return out
