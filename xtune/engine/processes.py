"""What the processes of a run agree on: a number summed, averaged or maximised over them, and each one's
peak memory. One process does no communication at all; several use mmengine's collectives (gloo on CPU,
nccl on CUDA: mmengine moves the tensor to the backend's device)."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("xtune")


def reduce(value, world_size: int, op: str = "sum"):
    """`value` (a number or a float64 tensor) reduced with `op` ('sum', 'mean', 'max') over the processes;
    as it is in one process."""
    if world_size <= 1:
        return value
    from mmengine.dist import all_reduce

    is_tensor = isinstance(value, torch.Tensor)
    tensor = value.clone() if is_tensor else torch.tensor([float(value)], dtype=torch.float64)
    all_reduce(tensor, op=op)
    return tensor if is_tensor else float(tensor[0])


def peak_memory(world_size: int) -> list[float]:
    """Each process's peak memory in MiB (GPU memory allocated on CUDA, else the process's peak RSS),
    logged once; `tools/bench.py scale` compares them."""
    if torch.cuda.is_available():
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "GPU memory allocated"
    else:
        import resource

        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "RSS"
    values = [peak]
    if world_size > 1:
        from mmengine.dist import all_gather

        values = [float(t) for t in all_gather(torch.tensor([peak], dtype=torch.float64))]
    log.info(f"peak memory per process ({kind}): {', '.join(f'{v:.0f}' for v in values)} MiB")
    return values
