"""Settings the engine reads with a default when a recipe does not define them.

`--cfg-options` may set them like any top-level recipe setting; `xtune train` fills in the defaults.
"""

from __future__ import annotations

from typing import Any

ENGINE_SETTINGS: dict[str, Any] = {
    # 'stop': a NaN/inf loss ends the run with an error; 'skip': that batch adds no gradient
    "on_nan": "stop",
    "val_ratio": 0.0,  # > 0: hold out this fraction of the training data and log a validation loss
    "val_steps": 0,  # validation interval in optimizer steps (0: at every checkpoint)
    "plot_loss": True,  # write training_loss.png in the work dir at the end
    "log_interval": 10,
    # 'auto' | 'hf' | 'modelscope' | 'local': where pretrained_model_name_or_path lives
    "model_source": "auto",
    # > 1: each packed row is cut along the sequence over this many processes (XTuner's name; Ulysses)
    "sequence_parallel_size": 1,
    # data switches that also have a place in `train_dataset` (OPTIONAL_KEYS); either spelling works
    "skip_bad_records": False,  # leave bad records out (each logged, counted) instead of stopping
    "ignore_images": False,  # a text model: train image records on their text alone, pictures left out
    # a test file: its answers generated and scored (BLEU-4, ROUGE, exact match) at the end of training
    "evaluation_data": None,
    "evaluation_dataset_map": None,  # its format (default: the training data's dataset map)
    "evaluation_steps": 0,  # also every N optimizer steps (0: at the end only)
    "evaluation_max_new_tokens": 128,
    "evaluation_batch_size": 8,
    "evaluation_limit": 0,  # the first N records only (0: all)
}
# Keys a section reads with a default, so `--cfg-options train_dataset.skip_bad_records=True` may add them.
OPTIONAL_KEYS = {"train_dataset": ("skip_bad_records", "ignore_images")}

# Top-level sections the engine reads from every recipe.
SECTIONS = ("tokenizer", "model", "method_cfg", "train_dataset", "train_dataloader", "optim_wrapper",
            "param_scheduler", "train_cfg", "checkpoint", "evaluate_chat", "randomness", "export_hf",
            "objective", "vlm")  # vlm: a vision-language recipe's parts (xtune.models.vlm)
# Other frameworks' names for xtune's settings (LLaMA-Factory / TRL / HF Trainer), for "did you mean".
ALIASES = {"learning_rate": "lr", "num_train_epochs": "max_epochs", "epochs": "max_epochs",
           "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
           "gradient_accumulation_steps": "accumulative_counts", "cutoff_len": "max_length",
           "max_seq_length": "max_length", "model_name_or_path": "pretrained_model_name_or_path",
           "template": "prompt_template", "dataset": "dataset_map", "save_total_limit": "save_total_limit",
           "max_grad_norm": "max_norm", "warmup_steps": "warmup_ratio", "output_dir": "--work-dir"}
