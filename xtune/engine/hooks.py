"""mmengine runner hooks (per-step callbacks; not pluggy plugin hooks) for the side concerns of a run.

- `DatasetInfoHook`: at the start, the data set's size and one rendered sample with its trained spans.
- `LossHistoryHook`: every optimizer step's loss, lr and validation loss, and the generation metrics of
  `evaluation_data` where they were measured (kept across resumes inside the checkpoints), written to
  `loss_history.json` and plotted to `training_loss.png` at the end.

The training loop (`xtune.engine.loop`) calls them once per optimizer step; they count nothing themselves.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mmengine.hooks import Hook

from xtune.fileio import atomic_write_text
from xtune.schedule import unwrap_model

log = logging.getLogger("xtune")


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class DatasetInfoHook(Hook):
    """Log the data set once before training, so a wrong template or label mask is seen at step 0."""

    def __init__(self, dataset, tokenizer, describe=None):
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.describe = describe  # the data pipeline's describe(dataset, tokenizer) -> str, when it has one

    def before_train(self, runner) -> None:
        log.info(f"training data: {len(self.dataset)} rows")
        if self.describe is None or len(self.dataset) == 0:
            return
        try:
            log.info(self.describe(self.dataset, self.tokenizer))
        except Exception as exc:  # information only: never stop a run for it
            log.warning(f"could not render a data sample: {type(exc).__name__}: {exc}")


class LossHistoryHook(Hook):
    """Every optimizer step's loss, lr and validation loss; survives resume by riding in the checkpoints."""

    priority = "BELOW_NORMAL"

    def __init__(self, plot: bool = True):
        self.plot = plot
        self.history: list[dict] = []
        self.val_history: list[dict] = []
        self.eval_history: list[dict] = []  # {"step", "bleu-4", "rouge-1", ...} (xtune.engine.evaluation)

    def before_train(self, runner) -> None:
        """The held-out loss before the first step (step 0), so that a curve shows how far training moved
        it; a resumed run has it from its checkpoint."""
        loop = runner.train_loop
        if runner.iter == 0 and getattr(getattr(loop, "parts", None), "validation", None) is not None:
            self.val_history.append({"step": 0, "loss": float(loop.validation_loss())})
            log.info(f"validation loss before training: {self.val_history[-1]['loss']:.4f}")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1  # the loop's iterations are optimizer steps
        outputs = outputs or {}
        if "loss" in outputs:
            self.history.append({"step": step, "loss": float(outputs["loss"]), "lr": outputs.get("lr")})
        if "val_loss" in outputs:
            self.val_history.append({"step": step, "loss": float(outputs["val_loss"])})
        measured = {k[len("eval_"):]: float(v) for k, v in outputs.items() if k.startswith("eval_")}
        if measured:
            self.eval_history.append({"step": step, **measured})

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["xtune_loss_history"] = {"train": self.history, "val": self.val_history,
                                            "evaluation": self.eval_history}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("xtune_loss_history") or {}
        self.history = list(saved.get("train", []))
        self.val_history = list(saved.get("val", []))
        self.eval_history = list(saved.get("evaluation", []))

    def after_train(self, runner) -> None:
        skipped = getattr(unwrap_model(runner.model), "skipped_batches", 0)
        if skipped:
            log.warning(f"on_nan=skip: {skipped} micro-batches had a non-finite loss and added no "
                        "gradient")
        if not _is_rank0():
            return
        work_dir = Path(runner.work_dir)
        data = {"train": self.history, "val": self.val_history, "evaluation": self.eval_history,
                "skipped_batches": skipped,
                "peak_memory_mib": list(getattr(runner.train_loop, "peak_memory", []))}
        atomic_write_text(work_dir / "loss_history.json", json.dumps(data, indent=1))
        if self.plot and self.history:
            from xtune.engine.plot import plot_loss

            try:
                path = plot_loss(self.history, self.val_history, work_dir / "training_loss.png")
                log.info(f"loss curve: {path}")
            except Exception as exc:  # a picture is not worth failing a finished run for
                log.warning(f"could not plot the loss: {type(exc).__name__}: {exc}")
