"""Training output -> Hugging Face folder: `xtune convert pth_to_hf`, and `WORK_DIR/hf` after `xtune train`.

The model is rebuilt exactly as the recipe built it for training (`xtune.models.build.build_trainable`,
so the parameter names match the checkpoint's), the trained weights are put in, and the result is saved with
the libraries' own writers: peft's `save_pretrained` for adapters (`adapter_config.json`,
`adapter_model.safetensors`), transformers' for full / freeze tuning (sharded safetensors). The tokenizer
goes beside it with the recipe's chat template, plus a model card. Adapters are rebuilt on a
full-precision base even for QLoRA: the adapter weights do not depend on how the base was stored.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xtune.export.model_card import training_info, write_card, write_info
from xtune.export.tokenizer import save_tokenizer
from xtune.fileio import atomic_output_dir, check_output

log = logging.getLogger("xtune")


def load_trained_weights(model, state_dict: dict, *, source: str, recipe: str) -> int:
    """Put the checkpoint's weights into `model` after `checkpoint.read.check_fits`; returns the number of
    tensors loaded."""
    from xtune.checkpoint.read import check_fits

    check_fits(model, state_dict, source=source, what=f"recipe {recipe!r}",
               hint="convert with the same recipe and --cfg-options as the training run")
    model.load_state_dict(state_dict, strict=False)
    return len(state_dict)


def save_hf(llm, tokenizer, out: str | Path, *, info: dict, uses_peft: bool, force: bool = False,
            max_shard_size: str = "5GB", dtype=None, registry, inputs=(),
            image_prompt: str = "") -> Path:
    """Write the adapter (peft) or the full model, the tokenizer (a vision-language model's processor)
    with the chat template, the card."""
    from xtune.models.legacy import source_model_type

    legacy = source_model_type(llm)
    base = getattr(llm, "get_base_model", lambda: llm)()
    if legacy:  # a hub-code base trained as its native twin: the card says how to load it
        info = dict(info, base_layout=f"{legacy} hub layout, trained natively as {type(base).__name__}")
    # the family it was trained on: merge and chat refuse the adapter on a base of another family
    info = dict(info, base_model_type=legacy or getattr(base.config, "model_type", None))
    with atomic_output_dir(out, force=force, inputs=inputs) as tmp:
        if uses_peft:
            # PiSSA / OLoRA (xtune.methods.lora_init): as a LoRA adapter of the original base
            initial = getattr(llm, "xtune_initial_adapter", None)
            llm.save_pretrained(str(tmp), safe_serialization=True, **(
                {"path_initial_model_for_weight_conversion": initial} if initial else {}))
        else:
            if dtype is not None:
                llm = llm.to(dtype)
            previous = llm.config.use_cache
            llm.config.use_cache = True  # trained with the cache off (packing); inference wants it on
            try:
                llm.save_pretrained(str(tmp), max_shard_size=max_shard_size)
            finally:
                llm.config.use_cache = previous
        save_tokenizer(tokenizer, tmp, info.get("prompt_template"), registry=registry,
                       image_prompt=image_prompt)
        write_info(tmp, info)
        write_card(tmp, info)
    return Path(out)


def pth_to_hf(recipe: str, checkpoint: str, out: str, *, registry, cfg_options: list[str] | None = None,
              force: bool = False, max_shard_size: str = "5GB", dtype: str | None = None) -> Path:
    """`xtune convert pth_to_hf RECIPE CHECKPOINT OUT`: cheap checks first, then the heavy loading."""
    from xtune.checkpoint.read import read_checkpoint, without_heads
    from xtune.export.stored_recipe import check_against_stored, recipe_for
    from xtune.hardware import torch_dtype
    from xtune.models.build import build_trainable, recipe_processor, recipe_tokenizer
    from xtune.recipe_files import resolve_recipe

    recipe_path = resolve_recipe(recipe, registry)
    check_output(out, force, (checkpoint,))
    weights = read_checkpoint(checkpoint)
    stored = weights.meta.get("xtune_recipe")
    cfg = recipe_for(stored, recipe_path, cfg_options or [])
    inputs = (checkpoint, cfg.model.get("pretrained_model_name_or_path"))
    check_output(out, force, inputs)
    from xtune.plan import resolve_plan

    plan = resolve_plan(cfg, registry, recipe=recipe_path.stem)  # as the training run resolved it
    check_against_stored(stored, plan, cfg, registry)
    weights.state_dict = without_heads(weights.state_dict)
    trained = build_trainable(cfg, registry, plan, for_export=True)
    loaded = load_trained_weights(trained.model, weights.state_dict, source=weights.source,
                                  recipe=recipe_path.stem)
    log.info("loaded %d trained tensors from %s", loaded, weights.source)
    processor = recipe_processor(cfg, registry)
    tokenizer = processor if processor is not None else recipe_tokenizer(cfg, registry)
    info = training_info(cfg, recipe=recipe_path.stem, step=weights.step, final_loss=weights.final_loss,
                         method=trained.method.name, uses_peft=trained.method.uses_peft)
    model, uses_peft, info, prompt = _saved(trained.model, cfg, plan, registry, trained.method, info,
                                            processor)
    return save_hf(model, tokenizer, out, info=info, uses_peft=uses_peft, force=force,
                   max_shard_size=max_shard_size, dtype=torch_dtype(dtype) if dtype else None,
                   registry=registry, inputs=inputs, image_prompt=prompt)


def _saved(model, cfg, plan, registry, method, info: dict, processor):
    """(model, as an adapter?, info, image prompt) to save; a vision-language run per `xtune.export.vlm`."""
    if processor is None:
        return model, method.uses_peft, info, ""
    from xtune.export import vlm
    from xtune.models.vlm import image_prompt_of

    if vlm.is_composed(cfg) and method.uses_peft and vlm.is_quantized(model):
        model = _full_precision(model, cfg, plan, registry, info.get("recipe", ""))  # 4-bit would round
    model, uses_peft = vlm.prepare(model, cfg, method.uses_peft)
    return model, uses_peft, vlm.vlm_info(info, cfg), image_prompt_of(model, registry)


def _full_precision(model, cfg, plan, registry, recipe: str):
    """The recipe's model rebuilt unquantised, with `model`'s trained tensors in it."""
    from xtune.models.build import build_trainable

    rebuilt = build_trainable(cfg, registry, plan, for_export=True).model
    state = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    load_trained_weights(rebuilt, state, source="the trained model", recipe=recipe)
    return rebuilt


def export_after_training(run, *, out_dir: str, registry) -> Path | None:
    """`xtune train`'s `export_hf` step: the in-memory trained model of a finished run
    (`xtune.engine.train.TrainedRun`) -> `out_dir` (replacing it).

    Under DeepSpeed ZeRO-3 every rank takes part in gathering the partitioned weights; rank 0 writes.
    """
    import logging

    from xtune.models.processors import is_processor

    info = training_info(run.cfg, recipe=run.recipe, step=run.steps, final_loss=run.final_loss,
                         method=run.method.name, uses_peft=run.method.uses_peft)
    with _gathered(run.llm):
        if run.rank == 0:
            processor = run.tokenizer if is_processor(run.tokenizer) else None
            model, uses_peft, info, prompt = _saved(run.llm, run.cfg, run.plan, registry, run.method, info,
                                                    processor)
            save_hf(model, run.tokenizer, out_dir, info=info, uses_peft=uses_peft, force=True,
                    registry=registry, image_prompt=prompt)
            logging.getLogger("xtune").info(
                f"exported the trained {'adapter' if uses_peft else 'model'} to {out_dir}")
    return Path(out_dir)


def _gathered(llm):
    """ZeRO-3 keeps each parameter partitioned across ranks; gather them for saving (a no-op otherwise)."""
    import contextlib

    params = [p for p in llm.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
