"""Training output -> Hugging Face folder: `xtune convert pth_to_hf`, and `WORK_DIR/hf` after `xtune train`.

The model is rebuilt exactly as the recipe built it for training (same loader, same tuning method, so the
parameter names match the checkpoint's), the trained weights are put in, and the result is saved with
the libraries' own writers: peft's `save_pretrained` for adapters (`adapter_config.json`,
`adapter_model.safetensors`), transformers' for full / freeze tuning (sharded safetensors). The tokenizer
goes beside it with the recipe's chat template, plus a model card. Adapters are rebuilt on a
full-precision base even for QLoRA: the adapter weights do not depend on how the base was stored.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from xtune.errors import UsageError
from xtune.export.atomic import atomic_output_dir, check_output
from xtune.export.model_card import training_info, write_card, write_info
from xtune.export.tokenizer import save_tokenizer

log = logging.getLogger("xtune")


def build_export_model(cfg, registry):
    """(model, TuningMethod entry, model adapter): the recipe's model with its method applied."""
    from xtune.methods.common import apply_method, method_settings
    from xtune.models.loading import load_model

    adapter_name = cfg.model.get("adapter")
    adapter = registry.model_adapters.get(adapter_name) if adapter_name else None
    method, _ = method_settings(cfg.method_cfg, registry)
    model_cfg = dict(cfg.model)
    model_cfg["gradient_checkpointing"] = False
    load_in_bits = method.load_in_bits
    if method.uses_peft:
        model_cfg["quantization"], load_in_bits = None, None
    llm = load_model(model_cfg, adapter=adapter, load_in_bits=load_in_bits, source=cfg.get("model_source", "auto"))
    return apply_method(llm, cfg.method_cfg, registry, adapter), method, adapter


def load_trained_weights(model, state_dict: dict, *, source: str, recipe: str) -> int:
    """Put the checkpoint's weights into `model`; every trainable parameter must come from the checkpoint
    and every checkpoint entry must have a place of the same shape. Returns the number of tensors loaded."""
    own = model.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n in trainable if n not in state_dict]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    hint = "convert with the same recipe and --cfg-options as the training run"
    if unexpected:
        raise UsageError(f"checkpoint {source!r} does not fit recipe {recipe!r}: {len(unexpected)} of its "
                         f"{len(state_dict)} tensors have no place in the model, e.g. {unexpected[0]!r}", hint=hint)
    if wrong:
        raise UsageError(f"checkpoint {source!r} does not fit recipe {recipe!r}: shape mismatch in {wrong[0]}",
                         hint=hint)
    if missing:
        raise UsageError(f"checkpoint {source!r} lacks {len(missing)} of the {len(trainable)} trained tensors "
                         f"of recipe {recipe!r}, e.g. {missing[0]!r}", hint=hint)
    model.load_state_dict(state_dict, strict=False)
    return len(state_dict)


def save_hf(llm, tokenizer, out: str | Path, *, info: dict, uses_peft: bool, force: bool = False,
            max_shard_size: str = "5GB", dtype=None) -> Path:
    """Write the adapter (peft) or the full model, the tokenizer with the chat template, the card."""
    with atomic_output_dir(out, force=force) as tmp:
        if uses_peft:
            llm.save_pretrained(str(tmp), safe_serialization=True)
        else:
            if dtype is not None:
                llm = llm.to(dtype)
            previous = llm.config.use_cache
            llm.config.use_cache = True  # trained with the cache off (packing); inference wants it on
            try:
                llm.save_pretrained(str(tmp), max_shard_size=max_shard_size)
            finally:
                llm.config.use_cache = previous
        save_tokenizer(tokenizer, tmp, info.get("prompt_template"))
        write_info(tmp, info)
        write_card(tmp, info)
    return Path(out)


def pth_to_hf(recipe: str, checkpoint: str, out: str, *, cfg_options: list[str] | None = None,
              force: bool = False, max_shard_size: str = "5GB", dtype: str | None = None) -> Path:
    """`xtune convert pth_to_hf RECIPE CHECKPOINT OUT`: cheap checks first, then the heavy loading."""
    from xtune.engine.config import load_recipe
    from xtune.export.checkpoint import read_checkpoint
    from xtune.models.loading import load_tokenizer, resolve_dtype
    from xtune.plugins import get_registry
    from xtune.recipe_files import resolve_recipe

    registry = get_registry()
    recipe_path = resolve_recipe(recipe, registry)
    check_output(out, force)
    cfg = load_recipe(recipe_path, cfg_options or [])
    weights = read_checkpoint(checkpoint)
    llm, method, adapter = build_export_model(cfg, registry)
    loaded = load_trained_weights(llm, weights.state_dict, source=weights.source, recipe=recipe_path.stem)
    log.info("loaded %d trained tensors from %s", loaded, weights.source)
    tokenizer = load_tokenizer(cfg.tokenizer, adapter, cfg.get("model_source", "auto"))
    info = training_info(cfg, recipe=recipe_path.stem, step=weights.step, final_loss=weights.final_loss,
                         method=method.name, uses_peft=method.uses_peft)
    return save_hf(llm, tokenizer, out, info=info, uses_peft=method.uses_peft, force=force,
                   max_shard_size=max_shard_size, dtype=resolve_dtype(dtype) if dtype else None)


def _recipe_name(cfg, work_dir: Path) -> str:
    """The recipe's name: `xtune train` dumps the recipe into the work dir as `<name>.py`."""
    if cfg.get("recipe_name"):
        return str(cfg.recipe_name)
    # mmengine also writes `<timestamp>.py` there (its own config dump): skip those.
    dumped = sorted((p for p in work_dir.glob("*.py") if not re.fullmatch(r"\d{8}_\d{6}", p.stem)),
                    key=lambda p: p.stat().st_mtime)
    return dumped[-1].stem if dumped else work_dir.name


def export_after_training(*, cfg, runner, tokenizer, out_dir: str) -> Path | None:
    """The engine's `export_hf` call point: the in-memory trained model -> `out_dir` (replacing it).

    Under DeepSpeed ZeRO-3 every rank takes part in gathering the partitioned weights; rank 0 writes.
    """
    from xtune.export.checkpoint import final_loss_from_message_hub
    from xtune.plugins import get_registry

    model = runner.model
    while hasattr(model, "module"):
        model = model.module
    llm = model.llm
    method = get_registry().tuning_methods.get(cfg.method_cfg.get("type"))
    work_dir = Path(out_dir).parent
    info = training_info(cfg, recipe=_recipe_name(cfg, work_dir), step=_optimizer_steps(runner, cfg),
                         final_loss=final_loss_from_message_hub(runner.message_hub), method=method.name,
                         uses_peft=method.uses_peft)
    with _gathered(llm):
        if runner.rank == 0:
            save_hf(llm, tokenizer, out_dir, info=info, uses_peft=method.uses_peft, force=True)
            runner.logger.info(f"exported the trained {'adapter' if method.uses_peft else 'model'} to {out_dir}")
    return Path(out_dir)


def _optimizer_steps(runner, cfg) -> int | None:
    accumulation = int((cfg.get("optim_wrapper") or {}).get("accumulative_counts", 1) or 1)
    iters = getattr(runner, "iter", None)
    return None if iters is None else -(-int(iters) // accumulation)


def _gathered(llm):
    """ZeRO-3 keeps each parameter partitioned across ranks; gather them for saving (a no-op otherwise)."""
    import contextlib

    params = [p for p in llm.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
