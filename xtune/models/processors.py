"""Loading a vision-language model's processor (tokenizer + image processor), slow image processors only.

transformers builds the video processor of Qwen2-VL, Qwen2.5-VL, InternVL and SmolVLM only when
torchvision imports (transformers 5.23: `Qwen2VLVideoProcessor requires the Torchvision library`), and
refuses to build their processors without one, although pictures need none of it. Where torchvision is
missing (or a folder was saved without the video part), `load_processor` builds the same processor
class without its video part (`image_only`): same name, same image processor and tokenizer.
"""

from __future__ import annotations

import functools
from pathlib import Path

from xtune.errors import ConfigError


@functools.cache
def image_only(cls):
    """`cls` (a processor class) with no video processor: its other parts and behaviour unchanged."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # The parent passes video_processor=None on; ProcessorMixin takes its parts from this signature.
        cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})


def _processor_class(path: str, trust_remote_code: bool):
    """The processor class a folder names (processor_config.json), else its model type's."""
    import json

    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    for file in ("processor_config.json", "preprocessor_config.json"):
        saved = Path(path) / file
        name = (json.loads(saved.read_text(encoding="utf-8")).get("processor_class") if saved.is_file()
                else None)
        if name and hasattr(transformers, name):
            return getattr(transformers, name)
    model_type = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).model_type
    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if not name:
        raise ConfigError(f"{path!r}: transformers has no processor for model type {model_type!r}")
    return getattr(transformers, name)


def load_processor(path: str | Path, *, trust_remote_code: bool = False, **kwargs):
    """`AutoProcessor.from_pretrained(path)`; without torchvision (PIL image processors) the processors that
    also handle videos are built for images only."""
    from transformers import AutoProcessor

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    # No backend= here: transformers hands it to the tokenizer as well (which then stops counting as fast);
    # without torchvision the image processors are the PIL ones anyway.
    try:
        return AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except (ImportError, OSError) as exc:  # no torchvision, or a folder saved without the video part
        if "torchvision" not in str(exc).lower() and "video processor" not in str(exc).lower():
            raise
    cls = image_only(_processor_class(str(path), trust_remote_code))
    return cls.from_pretrained(str(path), **kwargs)


def is_processor(obj) -> bool:
    """A processor (tokenizer + image processor) rather than a plain tokenizer."""
    return hasattr(obj, "image_processor") and hasattr(obj, "tokenizer")
