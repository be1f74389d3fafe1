"""The run plan: a recipe and its overrides resolved once into the typed, frozen settings every command reads.

`xtune train`, `xtune estimate`, `convert pth_to_hf`, `check-custom-dataset` and `log-dataset` all start
from a loaded recipe; each used to pick its settings out of it with its own `cfg.get(...)` calls, and the
memory estimate re-implemented the tuning method's resolution, `target_modules='auto'` and the quantisation
precedence — and disagreed with training (a QLoRA recipe whose `model.quantization` says 8 bit trained in 8
bit and was estimated in 4). Here each such rule is decided once, with the registry the command was given:

- the tuning method and its settings over the method's defaults (settings of other methods dropped), with
  `target_modules='auto'` as the model adapter's choice;
- the quantised base: the recipe's `model.quantization` section when it has one, else the method's
  registered settings (QLoRA: 4-bit NF4, double quantisation); its bits follow from that one answer;
- the objective (`sft` without an `objective` section) and its settings over its defaults;
- the run's length, batch, accumulation, precision request, optimizer, schedule, DeepSpeed preset.

`RunPlan.to_dict()` is what `xtune train` writes as WORK_DIR/plan.json and `xtune estimate --json` prints
under "plan": the same object for the same recipe, options and preset.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from types import MappingProxyType
from typing import Any

FROM_RECIPE_MODEL = ("pretrained_model_name_or_path", "adapter", "trust_remote_code", "torch_dtype",
                     "attn_implementation", "gradient_checkpointing", "quantization", "use_varlen_attn")


def _frozen(mapping) -> MappingProxyType:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class ModelPlan:
    path: str  # pretrained_model_name_or_path: a folder, a .gguf file, a hub or ModelScope id
    adapter: str | None  # the model adapter (family) the recipe names
    source: str  # 'auto' | 'hf' | 'modelscope' | 'local'
    trust_remote_code: bool
    weights_dtype: str  # 'auto' (the run's precision on CUDA, fp32 on CPU) or a dtype name
    attention: str  # 'auto' or an attn_implementation
    gradient_checkpointing: bool
    quantization: MappingProxyType  # BitsAndBytesConfig fields; empty: a full-precision base
    from_pretrained: MappingProxyType  # any other keyword of the recipe's model section

    @property
    def load_in_bits(self) -> int | None:
        q = self.quantization
        return 4 if q.get("load_in_4bit") else 8 if q.get("load_in_8bit") else None


@dataclass(frozen=True)
class MethodPlan:
    name: str
    uses_peft: bool
    settings: MappingProxyType  # over the method's defaults; target_modules resolved


@dataclass(frozen=True)
class ObjectivePlan:
    name: str  # 'sft' for a recipe without an objective section
    settings: MappingProxyType
    data: str  # the rows it trains on: sft, pairs, unpaired, prompts
    head: str  # causal_lm, or score (a reward model)
    reference: bool


@dataclass(frozen=True)
class TrainingPlan:
    batch_size: int  # per device
    accumulation: int
    max_steps: int  # 0: by epochs
    max_epochs: float
    precision: str  # optim_wrapper.dtype: 'auto' (decided by xtune.hardware on the machine) or a name
    optimizer: MappingProxyType
    max_norm: float | None
    scheduler: MappingProxyType
    seed: int
    deepspeed: str | None  # a preset name or a JSON file
    save_steps: int
    save_total_limit: int
    log_interval: int
    sequence_parallel: int = 1  # processes that share each row (xtune.engine.sequence_parallel)


@dataclass(frozen=True)
class RunPlan:
    recipe: str
    model: ModelPlan
    method: MethodPlan
    objective: ObjectivePlan
    training: TrainingPlan
    data: MappingProxyType  # the recipe's train_dataset section (the data pipeline's settings)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-able data (what train writes and estimate prints)."""
        return _plain(self)


def _plain(value):
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (dict, MappingProxyType)):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def resolve_plan(cfg, registry, *, recipe: str = "", deepspeed: str | None = None) -> RunPlan:
    """The plan of a loaded recipe (`xtune.recipe.load_recipe`) with the command's DeepSpeed preset."""
    return RunPlan(recipe=recipe, model=model_plan(cfg, registry), method=method_plan(cfg, registry),
                   objective=objective_plan(cfg, registry), training=training_plan(cfg, deepspeed),
                   data=_frozen(cfg.get("train_dataset")))


def method_plan(cfg, registry) -> MethodPlan:
    from xtune.methods.common import resolve_method

    entry, settings = resolve_method(cfg.method_cfg, registry)
    if "target_modules" in settings and settings["target_modules"] in (None, "auto"):
        settings["target_modules"] = auto_targets(cfg, registry)
    return MethodPlan(name=entry.name, uses_peft=entry.uses_peft, settings=_frozen(settings))


def auto_targets(cfg, registry):
    """`target_modules='auto'`: the model adapter's choice ('all-linear' unless the family says otherwise)."""
    adapter = _adapter(cfg, registry)
    wanted = adapter.lora_target_modules if adapter is not None else "all-linear"
    return list(wanted) if isinstance(wanted, (list, tuple)) else wanted


def model_plan(cfg, registry) -> ModelPlan:
    section = dict(cfg.model)
    method = registry.tuning_methods.get(cfg.method_cfg.get("type"))
    quant = dict(section.get("quantization") or {}) or dict(method.quantization)
    if not quant and method.load_in_bits:
        quant = (dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
                 if method.load_in_bits == 4 else dict(load_in_8bit=True))
    return ModelPlan(
        path=str(section.get("pretrained_model_name_or_path", "")), adapter=section.get("adapter"),
        source=str(cfg.get("model_source", "auto") or "auto"),
        trust_remote_code=bool(section.get("trust_remote_code", False)),
        weights_dtype=str(section.get("torch_dtype", "auto") or "auto"),
        attention=str(section.get("attn_implementation", "auto") or "auto"),
        gradient_checkpointing=bool(section.get("gradient_checkpointing", False)),
        quantization=_frozen(quant),
        from_pretrained=_frozen({k: v for k, v in section.items() if k not in FROM_RECIPE_MODEL}))


def objective_plan(cfg, registry) -> ObjectivePlan:
    """The objective and its settings over its defaults (checked against its class by the preflight; not
    imported here, so `xtune estimate` stays without torch)."""
    section = dict(cfg.get("objective") or {})
    entry = registry.objectives.get(section.pop("type", "sft"))
    settings = {**dict(entry.defaults), **section}
    return ObjectivePlan(name=entry.name, settings=_frozen(settings), data=entry.data, head=entry.head,
                         reference=entry.reference)


def training_plan(cfg, deepspeed: str | None) -> TrainingPlan:
    optim = dict(cfg.optim_wrapper)
    clip = optim.get("clip_grad") or {}
    checkpoint = cfg.get("checkpoint") or {}
    return TrainingPlan(
        batch_size=int(cfg.train_dataloader.batch_size),
        accumulation=int(optim.get("accumulative_counts", 1) or 1),
        max_steps=int(cfg.train_cfg.get("max_steps", 0) or 0),
        max_epochs=float(cfg.train_cfg.get("max_epochs", 0) or 0),
        precision=str(optim.get("dtype", "auto") or "auto"), optimizer=_frozen(optim.get("optimizer")),
        max_norm=float(clip["max_norm"]) if clip.get("max_norm") else None,
        scheduler=_frozen(cfg.get("param_scheduler")),
        seed=int((cfg.get("randomness") or {}).get("seed", 0) or 0), deepspeed=deepspeed,
        save_steps=int(checkpoint.get("interval", 0) or 0),
        save_total_limit=int(checkpoint.get("max_keep_ckpts", -1) or -1),
        log_interval=max(1, int(cfg.get("log_interval", 10) or 10)),
        sequence_parallel=int(cfg.get("sequence_parallel_size", 1) or 1))


def _adapter(cfg, registry):
    name = (cfg.get("model") or {}).get("adapter")
    return registry.model_adapters.get(name) if name else None


def data_settings(plan: RunPlan, cfg, registry) -> dict:
    """The data pipeline's settings of the plan's run: what `xtune train` builds its rows with, and what
    `log-dataset` and `check-custom-dataset` show and check (the seed included: packing shuffles with it)."""
    from xtune.data.from_recipe import dataset_cfg

    return {"seed": plan.training.seed, **dataset_cfg(cfg, registry)}
