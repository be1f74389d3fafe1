"""The training engine: recipe config -> mmengine Runner (or FlexibleRunner + DeepSpeed) -> checkpoints."""
