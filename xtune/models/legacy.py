"""Legacy hub-code checkpoints (InternLM 1/2/2.5, Baichuan 1/2, ChatGLM2/3) as native transformers models.

Their modelling code comes from the hub and was written for transformers 4.3x; on transformers 5 it does
not run (rope settings, caches, tied-weight declarations all changed). Each has a native twin holding the
same weights (`xtune.default_plugins.conversions`: InternLM2 -> Llama, ChatGLM3 -> Glm, ...), so a
checkpoint whose config.json matches a registered `CheckpointConversion` is loaded as that twin:
the native config is computed from the raw one, and the state dict is converted while it streams in,
through transformers' own weight-conversion machinery (the same path transformers uses for its renamed
architectures, so QLoRA quantises the converted tensors and nothing is held twice). The hub code runs only
when the user asks for it with `trust_remote_code=True`.

`write_original` does the reverse for `convert merge --format original`: the family's own layout and
config.json, so LMDeploy and the family's tools read the result.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtune.errors import ConfigError

log = logging.getLogger("xtune")
# Heads a task model adds on top of the checkpoint (a reward model's score), new by design.
NEW_HEADS = ("score.",)


def read_raw_config(path: str) -> dict | None:
    """The checkpoint's config.json as a dict (local folder, or the hub cache for an id); None when there
    is none to read (a GGUF file, a missing folder: the loading that follows reports it)."""
    local = Path(path).expanduser()
    if local.is_dir():
        try:
            return json.loads((local / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    try:
        from transformers import PretrainedConfig

        raw, _ = PretrainedConfig.get_config_dict(str(path))
        return raw
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class LegacyCheckpoint:
    """A checkpoint in a legacy layout and the conversion that loads it natively."""

    path: str
    raw: dict
    entry: Any  # xtune.registry.CheckpointConversion

    @property
    def source_type(self) -> str:
        return self.raw.get("model_type", "")

    def native_config(self, **overrides):
        """The native architecture's config (e.g. a LlamaConfig for InternLM2)."""
        from transformers import AutoConfig

        from xtune.registry import import_object

        fields = dict(import_object(self.entry.config)(self.raw))
        fields.update(overrides)
        model_type = fields.pop("model_type", self.entry.target)
        config = AutoConfig.for_model(model_type, **fields)
        config._name_or_path = str(self.path)
        return config

    def transforms(self, config) -> list:
        """The entry's weight rules as transformers WeightRenaming / WeightConverter objects."""
        from transformers.core_model_loading import WeightConverter, WeightRenaming

        from xtune.registry import import_object

        out = []
        for rule in self.entry.weights:
            if len(rule) == 2:
                out.append(WeightRenaming(rule[0], rule[1]))
            else:
                source, targets, factory = rule
                op = import_object(factory)(config)
                out.append(WeightConverter(source, list(targets), operations=[op]))
        return out


def find_legacy(path: str, raw: dict | None = None, *, registry,
                trust_remote_code: bool = False) -> LegacyCheckpoint | None:
    """The conversion (from `registry.checkpoint_conversions`) for the checkpoint at `path`, or None when it
    loads as it is (a native checkpoint, or the user asked for the hub's code). A layout with no native
    twin is a ConfigError saying why."""
    if trust_remote_code:
        return None
    raw = read_raw_config(path) if raw is None else raw
    if not raw or "model_type" not in raw:
        return None
    matches = [e for e in registry.checkpoint_conversions if e.matches(raw)]
    if not matches:
        return None
    entry = max(matches, key=lambda e: e.specificity)
    if entry.refuse:
        raise ConfigError(f"{path!r} ({raw['model_type']}, {', '.join(raw.get('architectures') or ['?'])}) "
                          f"cannot be loaded natively: {entry.refuse}",
                          hint="pass --cfg-options trust_remote_code=True to run the hub's own code (it was "
                               "written for transformers 4.x)")
    return LegacyCheckpoint(str(path), raw, entry)


def refuse_unknown_remote_code(path: str, raw: dict | None) -> None:
    """A checkpoint whose modelling code comes from the hub (an `auto_map`), with no native twin and no
    `trust_remote_code`: one line saying so, instead of transformers' message about an unknown model_type."""
    if not raw or not raw.get("auto_map"):
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if raw.get("model_type") not in CONFIG_MAPPING:
        raise ConfigError(f"{path!r} ({raw.get('model_type')}) needs its own modelling code from the hub, "
                          "and xtune knows no native architecture for it",
                          hint="set trust_remote_code=True (--cfg-options trust_remote_code=True) if you "
                               "trust that code")


@contextlib.contextmanager
def _scoped_mapping(class_name: str, transforms: list):
    """transformers looks conversions up by class name in a process-wide table; register ours for the
    duration of one `from_pretrained` and put back what was there, so native checkpoints of the same
    class loaded later are untouched."""
    from transformers import conversion_mapping as cm

    cm.get_checkpoint_conversion_mapping(class_name)  # builds the table on first use
    table = cm._checkpoint_conversion_mapping_cache
    before, had = table.get(class_name), class_name in cm.USER_REGISTERED_MAPPINGS
    cm.register_checkpoint_conversion_mapping(class_name, transforms, overwrite=True)
    try:
        yield
    finally:
        if before is None:
            table.pop(class_name, None)
        else:
            table[class_name] = before
        if not had:
            cm.USER_REGISTERED_MAPPINGS.discard(class_name)


class _DropTypeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "to instantiate a model of type" not in record.getMessage()


def model_class_for(auto_class, config):
    """The concrete class an Auto class would build for `config` (LlamaForCausalLM for a LlamaConfig)."""
    return auto_class._model_mapping[type(config)]


def load_native(legacy: LegacyCheckpoint, auto_class, **kwargs):
    """`auto_class.from_pretrained` of a legacy checkpoint as its native twin. The model saves natively
    (transformers would otherwise write the legacy keys back on save)."""
    config = kwargs.pop("config", None) or legacy.native_config()
    for key in ("num_labels",):
        if key in kwargs:
            setattr(config, key, kwargs.pop(key))
    cls = model_class_for(auto_class, config)
    notice = logging.getLogger("transformers.configuration_utils")
    quiet = _DropTypeNotice()
    notice.addFilter(quiet)  # "a model of type internlm2 to instantiate a model of type llama" is the point
    try:
        with _scoped_mapping(cls.__name__, legacy.transforms(config)):
            model, info = cls.from_pretrained(legacy.path, config=config, output_loading_info=True, **kwargs)
    finally:
        notice.removeFilter(quiet)
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith(NEW_HEADS)]
    if missing:  # a rule that does not fit this checkpoint: refuse rather than train random weights
        name = legacy.entry.name
        raise ConfigError(f"{legacy.path!r}: the conversion {name!r} left {len(missing)} weights "
                          f"of {cls.__name__} without a value ({', '.join(sorted(missing)[:3])}, ...)",
                          hint="the checkpoint's layout differs from the one this conversion knows")
    model._weight_conversions = None
    model.xtune_legacy = legacy  # not saved: lets chat pick the family's template
    log.info("loaded %s (%s) natively as %s", legacy.path, legacy.source_type, cls.__name__)
    return model


def source_model_type(model) -> str | None:
    """The model_type of the checkpoint a model was loaded from, when that was a legacy layout."""
    base = getattr(model, "get_base_model", None)
    model = base() if callable(base) else model
    legacy = getattr(model, "xtune_legacy", None)
    return legacy.source_type if legacy is not None else None


def _tokenizer_folder(path: str) -> Path | None:
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(path), allow_patterns=["tokenizer*", "special_tokens_map.json"]))
    except Exception:  # noqa: BLE001 - not on the hub / offline: transformers' own loading reports it
        return None


def legacy_tokenizer(path: str, *, registry, trust_remote_code: bool = False):
    """The fast tokenizer of a legacy family's folder (a SentencePiece model and a hub tokenizer class, no
    tokenizer.json) as a conversion of `registry` builds it, or None when transformers loads the folder
    itself."""
    if trust_remote_code:
        return None
    folder = _tokenizer_folder(path)
    if folder is None or (folder / "tokenizer.json").is_file():
        return None
    from xtune.models.legacy_tokenizers import tokenizer_config

    config = tokenizer_config(folder)
    name = config.get("tokenizer_class")
    if not name:
        return None
    entry = next((e for e in registry.checkpoint_conversions if name in e.tokenizer_classes and e.tokenizer),
                 None)
    if entry is None:
        return None
    if not (folder / "tokenizer.model").is_file():
        raise ConfigError(f"{str(folder)!r} names the tokenizer class {name} but has no tokenizer.model")
    from xtune.registry import import_object

    tokenizer = import_object(entry.tokenizer)(folder, config)
    tokenizer.name_or_path = str(path)
    log.info("tokenizer of %s built from its SentencePiece model (%s, no hub code)", path, name)
    return tokenizer
