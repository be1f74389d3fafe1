"""Checkpoints that survive `kill -9`, and a resume that reproduces the uninterrupted run.

- Written atomically: to a temporary name, then renamed; `last_checkpoint` likewise. A crash leaves
  either the previous checkpoint or the new one, never half a file that `--resume auto` would pick.
- Saved only at optimizer-step boundaries (gradients are zero there, so nothing half-accumulated is lost)
  and named by optimizer step: `iter_10.pth` is the state after 10 optimizer steps.
- Frozen weights are not stored (a LoRA checkpoint of a 7B model holds megabytes, not 13 GB); on resume
  they come from the freshly loaded base model, which is the same.
- The resolved recipe (its text after the overrides, and the method settings that define the trained
  tensors) rides along in `meta.xtune_recipe`, so `convert pth_to_hf` rebuilds exactly the trained model.
- RNG states (torch, CUDA, numpy, Python) are stored and restored *after* mmengine has skipped the
  data already trained, so dropout masks match the uninterrupted run.
- SIGTERM (preemption) and Ctrl-C ask for a checkpoint at the end of the current step, then the run
  exits non-zero (`xtune.engine.stopping`).

The training loop (`xtune.engine.loop`) decides when to save and calls `CheckpointSaver.save`; what a
checkpoint holds beyond mmengine's own content is `CheckpointContentHook`'s, called by mmengine's save
and resume.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

from mmengine.hooks import Hook

from xtune.checkpoint.layout import LAST, checkpoint_name, checkpoints_in
from xtune.errors import XtuneError
from xtune.fileio import atomic_write_text, commit
from xtune.schedule import unwrap_model

log = logging.getLogger("xtune")


def _rng_state() -> dict:
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class CheckpointSaver:
    """Writes `iter_N.pth` atomically and keeps the newest `max_keep` (-1: all)."""

    def __init__(self, max_keep: int = -1, layout=None):
        self.max_keep = int(max_keep) if max_keep else -1
        self.layout = layout  # xtune.checkpoint.run_layout.RunLayout, written beside DeepSpeed's shards

    def save(self, runner, step: int) -> str:
        """Save after optimizer step `step` (called while `runner.iter` is `step - 1`: mmengine stores
        `iter + 1` in the checkpoint's meta); returns the checkpoint's name. A failed write (disk full,
        file size limit) leaves no partial folder and keeps the earlier checkpoints."""
        work_dir = Path(runner.work_dir)
        final = work_dir / checkpoint_name(step)
        # Every rank writes into one temporary name (DeepSpeed: a folder of shards); rank 0 renames it.
        tmp = work_dir / f".{final.name}.tmp"
        try:
            runner.save_checkpoint(str(work_dir), filename=tmp.name, save_optimizer=True,
                                   save_param_scheduler=True, by_epoch=False)
            if runner.rank == 0:
                if any(tmp.glob("*model_states.pt")) and self.layout is not None:  # DeepSpeed
                    from xtune.checkpoint.run_layout import SIDECAR

                    atomic_write_text(tmp / SIDECAR, json.dumps(self.layout.to_dict()))
                commit(tmp, final)
                atomic_write_text(work_dir / LAST, final.name)  # relative: a copied work dir stays whole
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            if _is_write_failure(exc):
                kept = [p.name for p in checkpoints_in(work_dir)]
                raise XtuneError(f"could not write checkpoint {final} after step {step}: {_reason(exc)}",
                                 hint=f"free space in {work_dir}; the last good checkpoint, {kept[-1]}, is "
                                      "kept (--resume auto continues from it)" if kept else
                                      f"free space in {work_dir}: no earlier checkpoint exists") from None
            raise
        if runner.rank == 0:
            log.info(f"saved checkpoint {final}")
            self._prune(work_dir, keep=final)
        _barrier()
        return final.name

    def _prune(self, work_dir: Path, keep: Path) -> None:
        if self.max_keep <= 0:
            return
        found = checkpoints_in(work_dir)
        for old in found[: max(0, len(found) - self.max_keep)]:
            if old != keep:
                shutil.rmtree(old) if old.is_dir() else old.unlink()


class CheckpointContentHook(Hook):
    """What an xtune checkpoint holds beyond mmengine's own content: only the trained tensors, the resolved
    recipe, the RNG states (put back after a resumed run has skipped the trained data)."""

    def __init__(self, recipe: dict | None = None, layout=None, keep_all: bool = False):
        self.recipe = recipe  # the resolved recipe, stored in every checkpoint (train.recipe_record)
        self.layout = layout  # how the run cuts its global batch (xtune.checkpoint.run_layout)
        self.keep_all = keep_all  # BAdam, LISA: what trains changes during the run, so keep every weight
        self._pending_rng: dict | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = unwrap_model(runner.model)
        if isinstance(checkpoint.get("state_dict"), dict) and not self.keep_all:
            trainable = {name for name, p in model.named_parameters() if p.requires_grad}
            if len(trainable) < len(list(model.parameters())):
                state = checkpoint["state_dict"]
                checkpoint["state_dict"] = {k: v for k, v in state.items() if k in trainable}
                checkpoint["meta"]["xtune_trainable_only"] = True
        if self.recipe is not None:
            checkpoint.setdefault("meta", {})["xtune_recipe"] = self.recipe
        checkpoint.setdefault("meta", {})["xtune_iter_unit"] = "optimizer_step"
        if self.layout is not None:
            checkpoint["meta"]["xtune_layout"] = self.layout.to_dict()
        checkpoint["xtune_rng"] = _rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get("meta", {})
        if "iter" in meta and meta.get("xtune_iter_unit") != "optimizer_step" and \
                hasattr(runner.train_loop, "schedule"):
            # written before the loop counted optimizer steps: its `iter` counts micro-batches
            meta["iter"] = runner.train_loop.schedule.steps_done(meta["iter"])
        if meta.get("xtune_trainable_only"):
            model = unwrap_model(runner.model)
            # Only names that load_state_dict expects: bitsandbytes adds quant-state entries to a 4-bit
            # layer's state_dict that its loader would report as unexpected.
            names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
            full = {k: v for k, v in model.state_dict().items() if k in names}
            full.update(checkpoint["state_dict"])
            checkpoint["state_dict"] = full
        self._pending_rng = checkpoint.get("xtune_rng")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # The loop skips the already-trained batches between resume and the first step; that skip may
        # itself draw random numbers, so the saved states are put back only now.
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None


class CheckpointFiles:
    """Mixed into mmengine's Runner (not the DeepSpeed one): checkpoints are written as safetensors + JSON
    (`xtune.checkpoint.store`) instead of one pickle, and read back with no code run on opening, the
    older pickled files through the restricted unpickler (`xtune.checkpoint.trust`). The checkpoint
    dict is mmengine's own, so its resume logic and every hook see what they always saw."""

    def save_checkpoint(self, out_dir, filename, *, save_optimizer=True, save_param_scheduler=True,
                        by_epoch=False, **_):
        import time

        import mmengine
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import weights_to_cpu

        from xtune.checkpoint.store import write_store

        if self.rank != 0:  # mmengine's own save is rank 0's only as well
            return
        model = self.model.module if is_model_wrapper(self.model) else self.model
        meta = dict(epoch=self.epoch, iter=self.iter + 1, cfg=self.cfg.pretty_text, seed=self.seed,
                    experiment_name=self.experiment_name, time=time.strftime("%Y%m%d_%H%M%S"),
                    mmengine_version=mmengine.__version__)
        checkpoint = {"meta": meta, "state_dict": weights_to_cpu(model.state_dict()),
                      "message_hub": self.message_hub.state_dict()}
        if save_optimizer:
            checkpoint["optimizer"] = self.optim_wrapper.state_dict()
        if save_param_scheduler and self.param_schedulers:
            checkpoint["param_schedulers"] = [s.state_dict() for s in self.param_schedulers]
        self.call_hook("before_save_checkpoint", checkpoint=checkpoint)
        write_store(checkpoint, Path(out_dir) / filename)

    def load_checkpoint(self, filename, map_location="cpu", strict=False, revise_keys=((r"^module.", ""),)):
        from mmengine.model import is_model_wrapper
        from mmengine.runner.checkpoint import _load_checkpoint_to_model

        checkpoint = load_run_checkpoint(filename)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=list(revise_keys))
        self._has_loaded = True
        return checkpoint


def load_run_checkpoint(path) -> dict:
    """The whole mmengine checkpoint dict of a non-DeepSpeed `iter_N.pth` (folder, or an older file)."""
    from xtune.checkpoint.store import is_store, read_store
    from xtune.checkpoint.trust import load_pickled, note_old_format

    if is_store(path):
        return read_store(Path(path))
    note_old_format(path)
    return load_pickled(path)


def _is_write_failure(exc: BaseException) -> bool:
    """Disk full, a file size limit or a vanished folder, however the writer reports it (OSError;
    torch.save's RuntimeError; safetensors' SafetensorError)."""
    text = str(exc).lower()
    return isinstance(exc, OSError) or (isinstance(exc, Exception) and any(
        word in text for word in ("write", "i/o error", "ioerror", "no space", "os error")))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    return str(exc).strip().splitlines()[0][:300]


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()

