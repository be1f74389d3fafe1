"""The model entries: a model adapter (how xtune treats one architecture family) and a model (one
pretrained checkpoint with the figures the memory estimator reads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xtune.registry.base import Entry


@dataclass(frozen=True)
class ModelAdapter(Entry):
    """What xtune knows about a model family, keyed by the `model_type` of its HF config."""

    kind: ClassVar[str] = "model adapter"
    model_types: tuple[str, ...] = ()
    default_template: str = "default"
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    # Modules that stay trainable in full precision beside LoRA (e.g. resized embeddings).
    modules_to_save: tuple[str, ...] = ()
    # Name of the decoder layer list inside the model, used by `freeze` tuning ("model.layers").
    layers_path: str = "model.layers"
    trust_remote_code: bool = False  # the family's checkpoints need their hub code (no native twin)
    # Checkpoint conversions (`CheckpointConversion` names) that load this family's hub-code checkpoints
    # as a native architecture: shown by `xtune plugins`, used by the recipe generator's comments.
    conversions: tuple[str, ...] = ()
    # Modules that never train, whatever the method (Baichuan2's lm_head: its NormHead is applied once at
    # load, so a freely trained head would no longer be what the family's own code computes).
    frozen_modules: tuple[str, ...] = ()
    supports_flash_attn: bool = True
    supports_varlen: bool = True
    pad_token: str | None = None  # token to use as pad when the tokenizer has none (else EOS)
    # "llm" (a causal LM), "vlm" (a vision-language model: the parts below say where its vision tower,
    # projector and language model sit, as module paths) or "vision" (an image encoder for LLaVA).
    model_kind: str = "llm"
    vision_tower: str = ""
    projector: str = ""
    language_model: str = ""
    image_prompt: str = ""  # the text that stands for one image in a prompt ("": the processor's token)

    MODEL_KINDS: ClassVar[tuple[str, ...]] = ("llm", "vlm", "vision")

    def validate(self) -> None:
        super().validate()
        if not self.model_types:
            raise ValueError(f"model adapter {self.name!r} lists no model_types")
        if self.model_kind not in self.MODEL_KINDS:
            raise ValueError(f"model adapter {self.name!r}: model_kind must be one of "
                             f"{', '.join(self.MODEL_KINDS)}, got {self.model_kind!r}")
        if self.model_kind == "vlm" and not (self.vision_tower and self.projector and self.language_model):
            raise ValueError(f"model adapter {self.name!r} (model_kind 'vlm') needs vision_tower, projector "
                             "and language_model (module paths)")


@dataclass(frozen=True)
class Model(Entry):
    """A pretrained checkpoint xtune has recipes for: where it lives, its family, how big it is.

    The recipe generator writes recipes for every built-in model; `xtune estimate` reads the architecture
    figures (0 means unknown, and the estimator then reads the model's `config.json` instead).
    """

    kind: ClassVar[str] = "model"
    family: str = ""  # model adapter name
    hub_id: str = ""
    title: str = ""  # the model's own name, e.g. "InternLM2-Chat-7B"
    params_b: float = 0.0  # parameters, billions
    chat: bool = True  # instruction-tuned (False: a base model)
    unsupported: str = ""  # why xtune cannot train this checkpoint natively ("" when it can)
    # Architecture as the model's HF config states it.
    hidden_size: int = 0
    num_layers: int = 0
    num_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0  # 0: hidden_size // num_heads
    intermediate_size: int = 0
    vocab_size: int = 0
    tie_word_embeddings: bool = False
    num_experts: int = 0  # mixture of experts: routed experts per layer (0: dense)
    experts_per_token: int = 0
    num_shared_experts: int = 0
    moe_intermediate_size: int = 0  # 0: intermediate_size
    first_dense_layers: int = 0  # leading layers with a dense MLP before the expert layers (DeepSeek)
    # Multi-head latent attention (DeepSeek-V2): low-rank K/V (and Q) projections; 0 for ordinary attention.
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    rope_head_dim: int = 0  # the rotary part of each query/key head, beside head_dim
    v_head_dim: int = 0  # 0: head_dim

    def validate(self) -> None:
        super().validate()
        if not self.family or not self.hub_id:
            raise ValueError(f"model {self.name!r} needs a family (model adapter name) and a hub_id")


@dataclass(frozen=True)
class CheckpointConversion(Entry):
    """How checkpoints in a hub-code layout (written for transformers 4.x `trust_remote_code`) load into a
    native transformers architecture that holds the same weights, and how they are written back.

    A checkpoint matches when its raw config.json has `model_type`, one of `architectures` (none listed:
    any), every key in `requires`, none in `absent` and every (key, value) of `when`; the most specific
    match wins. A match
    with `refuse` set has no native twin: the text says why, and nothing loads unless the user asks for the
    hub code (`trust_remote_code=True`).

    `config` is the import path of ``fn(raw: dict) -> dict``, the native config's fields (`target` is its
    model_type). `weights` are the state-dict rules, applied in order at load time through transformers'
    own weight conversion (streamed shard by shard, quantised on the fly for QLoRA): ``(source, target)``
    renames a part of a key (a regex), ``(source, (target, ...), "module:factory")`` turns one tensor into
    several (or one) through ``factory(native_config)``, a transformers ``ConversionOps`` whose
    ``reverse_op`` writes the original layout back (tensors the native model has no place for, such as a
    stored rotary buffer, are copied from the original checkpoint). `tokenizer_classes` are the hub
    tokenizer classes of the family's tokenizer_config.json; `tokenizer` the import path of
    ``fn(folder: Path, tokenizer_config: dict)`` that builds the equivalent fast tokenizer from its
    SentencePiece model.
    """

    kind: ClassVar[str] = "checkpoint conversion"
    model_type: str = ""
    architectures: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    when: tuple[tuple[str, object], ...] = ()
    target: str = ""
    config: str = ""
    weights: tuple[tuple, ...] = ()
    tokenizer_classes: tuple[str, ...] = ()
    tokenizer: str = ""
    refuse: str = ""

    def validate(self) -> None:
        super().validate()
        if not self.model_type:
            raise ValueError(f"checkpoint conversion {self.name!r} names no model_type")
        if not self.refuse and not (self.target and ":" in self.config):
            raise ValueError(f"checkpoint conversion {self.name!r} needs target and config='module:function' "
                             "(or refuse='why')")
        for rule in self.weights:
            ok = (len(rule) == 2 and all(isinstance(p, str) for p in rule)) or (
                len(rule) == 3 and isinstance(rule[0], str) and isinstance(rule[1], tuple)
                and isinstance(rule[2], str) and ":" in rule[2])
            if not ok:
                raise ValueError(f"checkpoint conversion {self.name!r}: weight rule {rule!r} must be "
                                 "(source, target) or (source, (targets...), 'module:factory')")

    def matches(self, raw: dict) -> bool:
        """Whether a checkpoint with this raw config.json is one this entry converts (or refuses)."""
        if raw.get("model_type") != self.model_type:
            return False
        if self.architectures and not set(raw.get("architectures") or ()) & set(self.architectures):
            return False
        return (all(k in raw for k in self.requires) and not any(k in raw for k in self.absent)
                and all(raw.get(k) == v for k, v in self.when))

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Conditions on values first, then present / absent keys, then architectures."""
        return len(self.when), len(self.requires) + len(self.absent), int(bool(self.architectures))
