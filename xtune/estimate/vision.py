"""What a LLaVA composition (a vision encoder + an MLP projector + a registered language model) adds to the
estimate of its language model: the encoder's weights (frozen unless `freeze_vision=False`) and the
projector's, which trains. The projector is LLaVA's two linear layers with biases (vision hidden size ->
language hidden size -> language hidden size). Image tokens are already part of `max_length` in xtune's
VLM recipes. The frozen encoder runs its forward pass without keeping activations for a backward pass.

Hugging Face VLM checkpoints (Qwen2-VL, Idefics3, ...) carry no figures in the registry yet; the
architecture lookup refuses them by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xtune.errors import UsageError
from xtune.estimate.architecture import read_config_json


@dataclass(frozen=True)
class VisionParts:
    vision_params: int = 0
    projector_params: int = 0
    vision_trainable: bool = False
    projector_trainable: bool = True
    source: str = ""


def _encoder(name: str, registry) -> tuple[int, int, str]:
    """(parameters, hidden size, where the figures come from) of a vision encoder."""
    for model in registry.models:
        if name in (model.hub_id, model.name) and model.hidden_size:
            return int(model.params_b * 1e9), model.hidden_size, f"registry: {model.name}"
    config = Path(str(name)).expanduser() / "config.json"
    if config.is_file():
        data = read_config_json(config)
        data = data.get("vision_config") or data
        missing = [k for k in ("hidden_size", "num_hidden_layers", "intermediate_size") if k not in data]
        if missing:
            raise UsageError(f"{str(config)!r} has no {', '.join(missing)} for its vision encoder")
        h, layers, width = data["hidden_size"], data["num_hidden_layers"], data["intermediate_size"]
        patch, size = data.get("patch_size", 14), data.get("image_size", 336)
        per_layer = 4 * h * h + 2 * h * width + 9 * h  # q/k/v/o, the MLP, biases and norms
        params = layers * per_layer + 3 * patch * patch * h + ((size // patch) ** 2 + 1) * h
        return params, h, f"config.json at {config.parent}"
    raise UsageError(f"no figures for the vision encoder {name!r}: not a registered encoder and not a local "
                     "folder with config.json", hint="pass a local folder with its config.json")


def vision_parts(cfg, registry, llm_hidden: int) -> VisionParts:
    """The vision encoder and projector of a LLaVA-composition recipe (none for a text recipe)."""
    vlm = dict(cfg.get("vlm") or {})
    if not vlm.get("vision_model"):
        return VisionParts()
    params, vision_hidden, source = _encoder(str(vlm["vision_model"]), registry)
    projector = vision_hidden * llm_hidden + llm_hidden * llm_hidden + 2 * llm_hidden
    return VisionParts(params, projector, not vlm.get("freeze_vision", True),
                       bool(vlm.get("train_projector", True)), source)
