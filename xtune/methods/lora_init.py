"""LoRA initialisations that need more than peft's `init_lora_weights`.

PiSSA and OLoRA (peft's own) move the adapters' initial value out of the base weights (W_res = W - B0 A0),
so the trained adapter fits that residual base, not the original one. `keep_initial_adapter` saves B0 and
A0 when the adapters are made; saving (`xtune.export.pth_to_hf.save_hf`) hands them to peft, which writes
the difference as an ordinary LoRA adapter of twice the rank for the original base (what merge, chat and
GGUF export load).

LoftQ for QLoRA (Li et al., 2023): the adapters start as the best rank-r fit of what 4-bit rounding took
from each weight, so base + B A is closer to the original model than the 4-bit base alone.

peft's `replace_lora_weights_loftq` does this on a CUDA device only (it moves every weight there); here the
same fit runs where the weights are. For each 4-bit LoRA layer: the original weight W from the base's
safetensors, the dequantised 4-bit weight Q, the SVD of (W - Q) / scaling cut to the adapter's rank, so
that scaling x B A ~ W - Q (peft's helper leaves out the scaling, which is right only for lora_alpha = r).
A base that is not 4-bit is an export's full-precision rebuild: its adapter weights come from the
checkpoint, so nothing is fitted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from xtune.errors import ConfigError

log = logging.getLogger("xtune")
PREFIX = "base_model.model."


def loftq(model, adapter_name: str = "default") -> int:
    """Fit every 4-bit LoRA layer's A and B; returns how many layers were fitted."""
    import torch
    from peft.tuners.lora.bnb import Linear4bit

    layers = [(name.removeprefix(PREFIX), m) for name, m in model.named_modules()
              if isinstance(m, Linear4bit)]
    if not layers:
        log.info("init=loftq: not a 4-bit base (an export rebuild): the adapters come from the checkpoint")
        return 0
    import bitsandbytes as bnb

    folder = getattr(model.get_base_model().config, "_name_or_path", "")
    weights = original_weights(folder, [f"{name}.weight" for name, _ in layers])
    with torch.no_grad():
        for name, module in layers:
            weight = weights[f"{name}.weight"].float()
            rounded = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            rank, scaling = module.r[adapter_name], module.scaling[adapter_name]
            u, s, vh = torch.linalg.svd((weight - rounded.to(weight.device)) / scaling, full_matrices=False)
            root = s[:rank].sqrt()
            lora_a, lora_b = module.lora_A[adapter_name].weight, module.lora_B[adapter_name].weight
            lora_a.copy_((root[:, None] * vh[:rank]).to(lora_a))
            lora_b.copy_((u[:, :rank] * root).to(lora_b))
    log.info("init=loftq: fitted the adapters of %d 4-bit layers to their rounding error", len(layers))
    return len(layers)


def original_weights(folder: str, names: list[str]) -> dict:
    """The named tensors from the base's (sharded) safetensors files in `folder`."""
    from safetensors import safe_open

    root = Path(folder)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        where = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    elif (root / "model.safetensors").is_file():
        where = {name: "model.safetensors" for name in names}
    else:
        raise ConfigError(f"init='loftq' reads the base's own weights, and {folder!r} holds no "
                          "safetensors files", hint="use a local copy of the model, or init='default'")
    missing = [n for n in names if n not in where]
    out: dict = {}
    for file in sorted({where[n] for n in names if n in where}):
        with safe_open(str(root / file), framework="pt") as f:
            keys = set(f.keys())
            for name in names:
                if where.get(name) == file and name in keys:
                    out[name] = f.get_tensor(name)
    missing += [n for n in names if n not in out and n not in missing]
    if missing:
        raise ConfigError(f"init='loftq': the base's safetensors in {folder!r} have no {missing[0]!r} (this "
                          "family's weights are renamed when it loads)", hint="use init='default' or 'pissa'")
    return out


def keep_initial_adapter(model) -> str:
    """Save the freshly initialised adapter (peft's format) to a temporary folder named by
    `model.xtune_initial_adapter`; removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="xtune_initial_adapter_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    model.xtune_initial_adapter = folder
    return folder
