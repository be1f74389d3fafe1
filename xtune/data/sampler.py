"""The order of training rows, decided per *global* batch so that splitting it does not change the run.

An optimizer step trains on a global batch of `batch_size x accumulation x processes` rows. This sampler
shuffles the epoch (and, for unpacked rows, sorts each stretch of `mega_batch_mult` global batches by
length, longest first, so rows of a micro-batch are alike and little is padded), cuts the order into global
batches and only then deals each global batch out: micro-batch j of process r takes the rows
`(j x processes + r) x batch_size ...` of it. Which rows meet in a step therefore depends on the global
batch size alone: 1 process x micro-batch 4, 1 x 2 x 2 accumulation steps and 2 processes x 2 train on the
same rows in the same steps (and, with the loss a mean over the whole update's tokens, the same model).

The epoch is padded with its first rows to a multiple of `batch_size x processes` so every process draws the
same number of micro-batches (what mmengine's DefaultSampler does per process); the last optimizer step of an
epoch takes fewer micro-batches when the epoch does not fill it. mmengine's dataloader iterator calls
`set_epoch`, which reshuffles.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


class GlobalBatchSampler:
    """Row indices for one process; `lengths` (of the rows) turns on grouping by length, None shuffles."""

    def __init__(self, size: int, batch_size: int, *, accumulation: int = 1, lengths: list[int] | None = None,
                 seed: int = 0, mega_batch_mult: int = 50, rank: int | None = None,
                 world_size: int | None = None):
        if rank is None or world_size is None:
            from mmengine.dist import get_dist_info  # (0, 1) outside torch.distributed

            rank, world_size = get_dist_info()
        self.size, self.batch_size, self.accumulation = int(size), int(batch_size), int(accumulation)
        self.lengths = list(lengths) if lengths is not None else None
        self.seed, self.mega_batch_mult = seed, mega_batch_mult
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accumulation * self.world_size

    def global_order(self) -> list[int]:
        """Every process's rows of this epoch, in global-batch order (padded, see the module's docstring)."""
        order = list(range(self.size))
        random.Random(self.seed + self.epoch).shuffle(order)
        if self.lengths is not None:
            mega = self.global_batch * self.mega_batch_mult
            order = [i for start in range(0, len(order), mega)
                     for i in sorted(order[start:start + mega], key=lambda i: -self.lengths[i])]
        deal = self.batch_size * self.world_size
        short = -len(order) % deal
        while short:  # pad with the first rows (repeated if the data is smaller than one deal)
            order += order[:short]
            short = -len(order) % deal
        return order

    def __iter__(self) -> Iterator[int]:
        order, b, w = self.global_order(), self.batch_size, self.world_size
        for start in range(0, len(order), self.global_batch):
            batch = order[start:start + self.global_batch]
            for j in range(len(batch) // (b * w)):
                first = (j * w + self.rank) * b
                yield from batch[first:first + b]

    def __len__(self) -> int:
        padded = self.size + (-self.size % (self.batch_size * self.world_size))
        return padded // self.world_size

