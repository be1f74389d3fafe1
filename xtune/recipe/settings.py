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
}
