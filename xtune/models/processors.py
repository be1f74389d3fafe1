"""Loading a vision-language model's processor (tokenizer + image processor), slow image processors only.

transformers builds the video processor of Qwen2-VL, Qwen2.5-VL, InternVL and SmolVLM only when
torchvision imports (transformers 5.23: `Qwen2VLVideoProcessor requires the Torchvision library`), and
refuses to build their processors without one, although pictures need none of it; SmolVLM's also wants
num2words, which only words a video's frame count. Where torchvision (or num2words) is missing, or a folder
was saved without the video part, `load_processor` builds the same processor class without its video part
(`image_only`): same name, same image processor and tokenizer.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from pathlib import Path

from xtune.errors import ConfigError

NEEDED_FOR_VIDEOS = ("torchvision", "video processor", "num2words")


def _no_num2words(*_args, **_kwargs):
    raise ImportError("num2words is needed to describe videos: pip install num2words")


@contextlib.contextmanager
def _videos_unworded(cls):
    """SmolVLMProcessor refuses to be built while its module's `num2words` is None (not installed),
    though it calls it for videos only: a stand-in that refuses, while the processor is built."""
    module = sys.modules.get(cls.__module__)
    missing = module is not None and hasattr(module, "num2words") and module.num2words is None
    if missing:
        module.num2words = _no_num2words
    try:
        yield
    finally:
        if missing:
            module.num2words = None


def _init_without_videos(cls):
    """An `__init__` with the parameters of `cls.__init__` but `video_processor` (which it passes as None).
    Written out by name, as transformers reads a processor's settings off its `__init__`'s code and
    signature (to save and load them: InternVL's `image_seq_length`, SmolVLM's `image_seq_len`)."""
    named = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
             if p.name != "video_processor" and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    defaults = {p.name: None if p.default is inspect.Parameter.empty else p.default for p in named}

    def build(self, **given):
        with _videos_unworded(cls):
            cls.__init__(self, video_processor=None, **given)

    params = "".join(f"{p.name}=_defaults[{p.name!r}], " for p in named)
    passed = "".join(f"{p.name}={p.name}, " for p in named)
    scope = {"_defaults": defaults, "_build": build}
    exec(f"def __init__(self, {params}**kwargs):\n    _build(self, {passed}**kwargs)\n", scope)
    return scope["__init__"]


class NoVideos:
    """Where the video processor of an images-only processor would be: its frame settings read as None
    (SmolVLM's `apply_chat_template` reads them for every conversation), and videos are refused."""

    num_frames = fps = None

    def __call__(self, *_args, **_kwargs):
        raise ConfigError("this processor was built for images only, without its video part",
                          hint="install torchvision (and num2words for SmolVLM) to give it videos")


@functools.cache
def image_only(cls):
    """`cls` (a processor class) with no video processor: its other parts, settings and behaviour
    unchanged."""
    return type(cls.__name__, (cls,), {"__init__": _init_without_videos(cls), "__module__": cls.__module__,
                                       "video_processor": NoVideos()})


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
    except (ImportError, OSError) as exc:  # no torchvision / num2words, or saved without the video part
        if not any(name in str(exc).lower() for name in NEEDED_FOR_VIDEOS):
            raise
    cls = image_only(_processor_class(str(path), trust_remote_code))
    return cls.from_pretrained(str(path), **kwargs)


def is_processor(obj) -> bool:
    """A processor (tokenizer + image processor) rather than a plain tokenizer."""
    return hasattr(obj, "image_processor") and hasattr(obj, "tokenizer")
