"""Gradients and optimizer states of the low-memory full-parameter methods (xtune.methods: LOMO, AdaLomo,
GaLore, APOLLO, BAdam, LISA), term by term; every weight trains over the run, so weights, activations and
checkpoint are those of full fine-tuning (`xtune.estimate.memory`). docs/estimate.md derives each term:

- LOMO: no gradient buffer and no states: a gradient lives from backward computing it until the next
  one's hook applies it, so about two tensors' gradients at a time, the largest being the embedding matrix;
- AdaLomo: LOMO's gradients plus its factored second moments in fp32 (rows + columns of each matrix, the
  whole of each vector) and, while a matrix is updated, two fp32 tensors of its size (its squared gradient
  and the update);
- GaLore / APOLLO: full gradients; AdamW moments of each projected weight are rank x its larger side, plus
  its projection matrix (rank x the smaller side); the other parameters keep full moments; APOLLO also
  scales the raw gradient of one weight at a time (a copy of it);
- BAdam: the active decoder layer's gradients, its fp32 copy and its two fp32 moments;
- LISA: gradients and moments of what always trains (embeddings, head, final norm) plus the sampled layers.
"""

from __future__ import annotations

LOW_MEMORY = ("lomo", "adalomo", "galore", "apollo", "badam", "lisa")


def low_memory_terms(arch, plan, targets) -> tuple[float, float, str, str]:
    """(gradient bytes, optimizer-state bytes, their notes) for `plan.method`; `targets`: the linear layers
    GaLore / APOLLO project (`xtune.estimate.memory.lora_targets`)."""
    p = plan.weight_bytes
    largest = max([arch.embedding_params] + [linear.d_in * linear.d_out for linear in arch.linears()])
    layer = (arch.linear_params + arch.norm_params - arch.hidden_size) / arch.num_layers
    outside = arch.embedding_params + arch.output_params + arch.hidden_size  # and the final norm
    if plan.method in ("lomo", "adalomo"):
        grads = 2.0 * largest * p + (0 if p == 4 else 2.0 * largest * 4)  # fp32 copies of a 16-bit one
        note = "none kept: each applied and freed in backward (about two tensors at a time)"
        if plan.method == "lomo":
            return grads, 0.0, note, "LOMO: none (SGD)"
        factored = sum((linear.d_in + linear.d_out) * linear.count for linear in arch.linears())
        matrices = 1 if arch.tie_word_embeddings else 2  # the embedding and output matrices, and the norms
        vectors = (arch.vocab_size + arch.hidden_size) * matrices + arch.norm_params
        return grads + 2.0 * largest * 4, (factored + vectors) * 4.0, note, \
            "AdaLomo: factored second moments (rows + columns) in fp32"
    if plan.method in ("galore", "apollo"):
        rank = max(plan.method_rank, 1)
        projected = low_rank = 0.0
        for linear in targets:
            r = min(rank, linear.d_in, linear.d_out)
            projected += linear.params
            wide, narrow = max(linear.d_in, linear.d_out), min(linear.d_in, linear.d_out)
            low_rank += linear.count * (2 * r * wide + r * narrow)
        states = (arch.params - projected) * 2.0 * p + low_rank * p
        grads = arch.params * float(p)
        if plan.method == "apollo":
            grads += max(linear.d_in * linear.d_out for linear in targets) * p
        return grads, states, f"all {arch.params / 1e6:.0f} M, in the weights' type", \
            f"{plan.method}: rank-{rank} moments and projections of {projected / 1e6:.0f} M weights, " \
            "full AdamW moments for the rest"
    if plan.method == "badam":
        copies = 0 if p == 4 else layer * 4
        return layer * p + copies, layer * 12.0, "one decoder layer's (the active block)", \
            "BAdam: the active layer's fp32 copy and two fp32 moments"
    trained = outside + layer * min(max(plan.activated_layers, 1), arch.num_layers)
    return trained * p, trained * 2.0 * p, \
        f"embeddings, head and {plan.activated_layers} sampled layers ({trained / 1e6:.0f} M)", \
        "LISA: AdamW moments of what trains now"
