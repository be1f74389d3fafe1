"""The LLaVA composition XTuner users know: a CLIP or SigLIP vision encoder + a two-layer MLP projector +
any registered language model, built as transformers' own `LlavaForConditionalGeneration`.

The parts are loaded with their own classes and placed into a LLaVA skeleton (built on the meta device,
so no weights are allocated twice); only the projector is new (or read from the 'pretrain' stage's
output, `projector_from`). A quantised language model (QLoRA) is placed as it is. The tokenizer gains an
`<image>` token and the processor is transformers' `LlavaProcessor` over the encoder's image processor,
so the saved folder loads and chats in plain transformers. Encoders with a class token (CLIP) drop it
('default' feature selection); SigLIP has none ('full').
"""

from __future__ import annotations

from pathlib import Path

from xtune.errors import ConfigError
from xtune.templates.images import IMAGE_MARKER

# The projector's weights as a LLaVA folder stores them (transformers saves the hub's layout) or in memory.
PROJECTOR_PREFIXES = ("multi_modal_projector.", "model.multi_modal_projector.")


def _vision_config(path: str):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    return getattr(config, "vision_config", None) or config  # a full CLIP / SigLIP checkpoint, or its tower


def _has_class_token(vision_config) -> bool:
    return not vision_config.model_type.startswith("siglip")


def compose_processor(tokenizer, vision: str):
    """`LlavaProcessor` over the encoder's image processor and `tokenizer` with an `<image>` token."""
    from transformers import AutoImageProcessor, LlavaProcessor

    if IMAGE_MARKER not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_MARKER]})
    config = _vision_config(vision)
    cls_token = _has_class_token(config)
    return LlavaProcessor(image_processor=AutoImageProcessor.from_pretrained(vision, backend="pil"),
                          tokenizer=tokenizer, patch_size=config.patch_size, image_token=IMAGE_MARKER,
                          vision_feature_select_strategy="default" if cls_token else "full",
                          num_additional_image_tokens=1 if cls_token else 0)


def llava_config(llm_config, vision_config, tokenizer, feature_layer: int = -2):
    from transformers import LlavaConfig

    cls_token = _has_class_token(vision_config)
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    return LlavaConfig(vision_config=vision_config, text_config=llm_config,
                       image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_MARKER),
                       projector_hidden_act="gelu", vision_feature_layer=feature_layer,
                       vision_feature_select_strategy="default" if cls_token else "full",
                       image_seq_length=patches, multimodal_projector_bias=True,
                       tie_word_embeddings=bool(getattr(llm_config, "tie_word_embeddings", False)))


def compose_llava(llm, vision: str, tokenizer, *, projector_from: str | None = None, feature_layer: int = -2):
    """A `LlavaForConditionalGeneration` around the loaded causal LM `llm` and the encoder at `vision`."""
    import torch
    from transformers import LlavaForConditionalGeneration

    config = llava_config(llm.config, _vision_config(vision), tokenizer, feature_layer)
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    embeddings = llm.get_input_embeddings().weight  # never quantised: the dtype the rest computes in
    dtype, device = embeddings.dtype, embeddings.device
    tower = type(llava.model.vision_tower).from_pretrained(vision, dtype=dtype)
    llava.model.vision_tower = tower.to(device)
    llava.model.language_model = llm.get_decoder() if hasattr(llm, "get_decoder") else llm.model
    llava.lm_head = llm.get_output_embeddings()
    llava.model.multi_modal_projector = type(llava.model.multi_modal_projector)(config).to(device, dtype)
    for attr in ("is_loaded_in_4bit", "is_loaded_in_8bit", "hf_quantizer", "quantization_method"):
        if hasattr(llm, attr):
            setattr(llava, attr, getattr(llm, attr))
    _grow_embeddings(llava, len(tokenizer))
    if projector_from:
        load_projector(llava, projector_from)
    llava.config.use_cache = False
    return llava


def _grow_embeddings(llava, size: int) -> None:
    """Room for the `<image>` token. Its rows start at the mean of the others, not at random, so that every
    build of the same recipe (training, `convert pth_to_hf`) is the same model; the input row is never
    read (image features replace it)."""
    import torch

    old = llava.get_input_embeddings().weight.shape[0]
    if size <= old:
        return
    llava.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        for layer in {llava.get_input_embeddings(), llava.get_output_embeddings()}:
            layer.weight[old:] = layer.weight[:old].mean(dim=0)


def load_projector(llava, source: str) -> int:
    """The projector weights of the 'pretrain' stage: its WORK_DIR/hf folder (a LLaVA model) or a
    .safetensors file holding `multi_modal_projector.*`."""
    from safetensors.torch import load_file

    path = Path(source).expanduser()
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise ConfigError(f"projector_from {source!r}: no .safetensors weights there",
                          hint="point it at the 'pretrain' stage's WORK_DIR/hf")
    found = {}
    for f in files:
        for key, value in load_file(str(f)).items():
            prefix = next((p for p in PROJECTOR_PREFIXES if key.startswith(p)), None)
            if prefix:
                found[key[len(prefix):]] = value
    if not found:
        raise ConfigError(f"projector_from {source!r} holds no multi_modal_projector.* weights",
                          hint="point it at the 'pretrain' stage's WORK_DIR/hf")
    projector = llava.model.multi_modal_projector
    own = projector.state_dict()
    wrong = [k for k, v in found.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if wrong or set(own) - set(found):
        example = (wrong or sorted(own))[0]
        raise ConfigError(f"projector_from {source!r} does not fit this LLaVA (e.g. {example!r})",
                          hint="the pretrain stage must use the same language model and vision encoder")
    projector.load_state_dict({k: v.to(own[k].dtype) for k, v in found.items()})
    return len(found)
