"""How many processes wrote a checkpoint and how they cut the global batch, and whether a resumed run may
continue it.

A run continues exactly from a checkpoint when it trains the same rows in the same steps: with the loss a
mean over the whole global batch and the rows ordered per global batch (`xtune.data.sampler`), that holds
whenever `batch_size x accumulation x processes` is unchanged, so a 2-process run may resume in 1
process with twice the accumulation. Two things cannot be carried over and are refused in one line,
before the model loads: another global batch (other rows per step, another schedule) and DeepSpeed ZeRO
partitions written by another number of processes (DeepSpeed reads them only as they were cut).

The layout rides in the checkpoint's meta (`xtune_layout`) and, for a DeepSpeed folder, in
`xtune_layout.json` beside its shards, so it is read without loading any tensor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from xtune.errors import UsageError

SIDECAR = "xtune_layout.json"


@dataclass(frozen=True)
class RunLayout:
    world_size: int
    batch_size: int
    accumulation: int
    deepspeed: bool

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_size * self.accumulation

    def describe(self) -> str:
        return (f"{self.global_batch} rows ({self.batch_size} x {self.accumulation} accumulation x "
                f"{self.world_size} process{'es' if self.world_size > 1 else ''})")

    def to_dict(self) -> dict:
        return asdict(self)


def stored_layout(checkpoint: str | Path) -> RunLayout | None:
    """The layout a checkpoint was written with; None for checkpoints older than the record."""
    from xtune.checkpoint.store import is_store, read_store_state

    path = Path(checkpoint)
    if is_store(path):
        found = read_store_state(path).get("meta", {}).get("xtune_layout")
        return RunLayout(**found) if isinstance(found, dict) else None
    if path.is_dir():
        sidecar = path / SIDECAR
        if sidecar.is_file():
            return RunLayout(**json.loads(sidecar.read_text()))
        shards = len(list(path.glob("*zero_pp_rank_*_optim_states.pt")))
        return RunLayout(shards, 0, 0, True) if shards else None
    from xtune.checkpoint.read import read_checkpoint

    found = read_checkpoint(path).meta.get("xtune_layout")
    return RunLayout(**found) if isinstance(found, dict) else None


def check_resume_layout(checkpoint: str | Path, current: RunLayout) -> None:
    """Refuse, in one line that says what to do, a resume that would not continue the stored run."""
    stored = stored_layout(checkpoint)
    if stored is None:
        return
    where = f"--resume {str(checkpoint)!r}"
    if stored.deepspeed and stored.world_size != current.world_size:
        raise UsageError(
            f"{where}: its DeepSpeed ZeRO partitions were written by {stored.world_size} processes and "
            f"this run has {current.world_size}; DeepSpeed reads them only as they were cut",
            hint=f"resume with {stored.world_size} processes (NPROC_PER_NODE x NNODES), or export the "
                 "weights with `xtune convert pth_to_hf` and start a new run from them")
    if stored.deepspeed != current.deepspeed:
        used = "with" if stored.deepspeed else "without"
        raise UsageError(f"{where} was written {used} DeepSpeed and this run is "
                         f"{'not ' if stored.deepspeed else ''}using it",
                         hint="resume with the --deepspeed setting it was trained with")
    if stored.batch_size and stored.global_batch != current.global_batch:
        per_step = current.batch_size * current.world_size
        hint = (f"set accumulative_counts={stored.global_batch // per_step} to keep {stored.global_batch} "
                "rows per step" if stored.global_batch % per_step == 0 else
                f"keep batch_size x accumulative_counts x processes = {stored.global_batch}")
        raise UsageError(f"{where} was trained with a global batch of {stored.describe()}; this run's is "
                         f"{current.describe()}, so its steps would train other rows on another schedule",
                         hint=hint)
