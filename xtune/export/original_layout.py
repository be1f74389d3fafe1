"""`convert merge --format original`: a merged model written back in its family's own hub layout.

xtune trains InternLM, Baichuan and ChatGLM checkpoints as their native twins (`xtune.models.legacy`);
the default merged output is that native model, which transformers, vLLM and `hf_to_gguf` read. Some users
need the family's own layout instead (LMDeploy's InternLM / ChatGLM support, the family's own scripts):
here the native state dict goes through the reverse of the conversion that loaded it (transformers'
`revert_weight_conversion` with the same rules), tensors the original checkpoint stores but the native
model has no place for (ChatGLM's rotary buffer) are copied from the base unchanged, and the base's own
config.json, modelling code and tokenizer files are written beside it. Reading the result back through
xtune gives the merged model bit for bit (tests/test_legacy_models.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from xtune.errors import UsageError

log = logging.getLogger("xtune")

# Files of the base folder the family's own tools read beside the weights.
BESIDE_WEIGHTS = ("generation_config.json", "tokenizer.model", "tokenizer_config.json",
                  "special_tokens_map.json", "added_tokens.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def base_folder(path: str) -> Path:
    """The base checkpoint's files: a local folder, or its snapshot in the hub cache."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path)))


def _weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files as transformers finds them: safetensors first, then .bin, each single
    or sharded through its index."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / index).is_file():
            weight_map = json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"]
            return [folder / name for name in sorted(set(weight_map.values()))]
        if (folder / single).is_file():
            return [folder / single]
    return []


def _stored_tensors(folder: Path) -> dict:
    """{key: (file, key)} for every tensor the base checkpoint stores."""
    from safetensors import safe_open

    out = {}
    for file in _weight_files(folder):
        if file.suffix == ".safetensors":
            with safe_open(str(file), "pt") as f:
                out.update({key: (file, key) for key in f.keys()})  # noqa: SIM118 - no __iter__
        else:
            import torch

            state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
            out.update({key: (file, key) for key in state})
    return out


def _read(file: Path, key: str):
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            return f.get_tensor(key)
    import torch

    return torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)[key].clone()


def original_state_dict(model, legacy, base: Path) -> dict:
    """The model's weights under the original keys and layout, plus the base's extra stored tensors."""
    from transformers.core_model_loading import revert_weight_conversion

    native = dict(model.state_dict())
    model._weight_conversions = legacy.transforms(model.config)
    try:
        state = revert_weight_conversion(model, native)
    finally:
        model._weight_conversions = None
    stored = _stored_tensors(base)
    unknown = sorted(set(state) - set(stored))
    if stored and unknown:
        raise UsageError(f"the merged model has tensors the base {str(base)!r} does not store: "
                         f"{', '.join(unknown[:3])}", hint="merge into the base the adapter was trained on")
    for key in sorted(set(stored) - set(state)):
        state[key] = _read(*stored[key])
        log.info("copied %s from the base (the native model has no place for it)", key)
    return {k: v.contiguous() for k, v in state.items()}


def write_original(model, tmp: Path, legacy, *, max_shard_size: str = "5GB",
                   chat_template: str | None = None) -> None:
    """Write `model` (a merged native twin) into `tmp` in `legacy`'s original layout."""
    from huggingface_hub import save_torch_state_dict

    base = base_folder(legacy.path)
    state = original_state_dict(model, legacy, base)
    save_torch_state_dict(state, str(tmp), max_shard_size=max_shard_size, metadata={"format": "pt"})
    config = dict(legacy.raw)
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        config["torch_dtype"] = str(dtypes.pop()).removeprefix("torch.")
    (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    for source in sorted(base.glob("*.py")) + [base / n for n in BESIDE_WEIGHTS]:
        if source.is_file():
            shutil.copy2(source, tmp / source.name)
    if chat_template and (tmp / "tokenizer_config.json").is_file():
        tok_cfg = json.loads((tmp / "tokenizer_config.json").read_text(encoding="utf-8"))
        tok_cfg["chat_template"] = chat_template
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")
