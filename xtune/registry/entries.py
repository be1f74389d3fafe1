"""The typed entries plugins register: plain, hashable data, checked by `validate()`.

Anything heavy (a function that converts records, a builder that touches torch) is named by an import
path string such as ``"xtune.data.formats:alpaca"`` and imported only when used, so that building the
registry never imports torch or transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from xtune.registry.base import Entry
from xtune.registry.model_entries import CheckpointConversion, Model, ModelAdapter


@dataclass(frozen=True)
class DatasetMap(Entry):
    """A named data set or record format: how records become xtune's conversation form.

    Either `convert` (import path of ``fn(record, **options) -> conversation``) or `format`
    (the name of another dataset map whose converter to reuse, after renaming `columns`).
    `hub_id` is where the data lives by default (a recipe's `data_path` may point elsewhere).
    """

    kind: ClassVar[str] = "dataset map"
    convert: str | None = None
    format: str | None = None
    columns: tuple[tuple[str, str | None],
                   ...] = ()  # (field the converter reads, column in the data; None: absent)
    hub_id: str | None = None
    hub_config: str | None = None  # the `name` argument of datasets.load_dataset
    data_files: str | None = None
    split: str = "train"
    system: str = ""  # a system prompt this data set is meant to be trained with
    combine: tuple[str, ...] = ()  # a mixture: the named dataset maps, concatenated
    language: str = "en"
    license: str = ""
    data: str = "sft"  # what the converter yields: 'sft', 'pairs', 'unpaired', 'prompts' (Objective.data)

    def validate(self) -> None:
        super().validate()
        given = [bool(self.convert), bool(self.format), bool(self.combine)]
        if sum(given) != 1:
            raise ValueError(f"dataset map {self.name!r} needs exactly one of convert=, format= or combine=")
        if self.convert and ":" not in self.convert:
            raise ValueError(
                f"dataset map {self.name!r}: convert must be 'module:function', got {self.convert!r}")


@dataclass(frozen=True)
class ChatTemplate(Entry):
    """A chat format, as plain data: `xtune.templates` renders it, `template export` turns it into jinja.

    Every text field is a string in which ``{content}`` stands for the message text and
    ``{bos_token}``, ``{eos_token}``, ``{date_string}`` for render-time values (the tokenizer's
    special tokens default to `bos_token` / `eos_token` below, the reference tokenizer's). Only the
    assistant's `assistant` + `assistant_end` text is trained; everything else is prompt.
    docs/templates.md explains each field with the official template it reproduces.
    """

    kind: ClassVar[str] = "chat template"
    families: tuple[str, ...] = ()
    stop_words: tuple[str, ...] = ()
    reference: str = ""  # what the rendering is checked against (a path of the shared reference templates)
    bos_token: str = ""  # the reference tokenizer's BOS / EOS text: the defaults of {bos_token} / {eos_token}
    eos_token: str = ""
    bos: str = ""  # opens every conversation
    round_start: str = ""  # opens every round (a user turn and its answer), e.g. a BOS before each [INST]
    # The leading system message. placement: "turn" (its own text after `bos`), "first_user" / "last_user"
    # (prepended to the first user message / to the final message when that is a user one, else dropped),
    # "collect" (every system message, joined by `system_joiner`, after `bos`), "refuse".
    system: str = "{content}"
    system_placement: str = "turn"
    system_joiner: str = "\n\n"
    default_system: str | None = None  # rendered when there is no system message ("" renders it empty)
    skip_empty_system: bool = False  # an empty system message renders nothing
    # System messages after the first: "refuse", "drop", "same" (formatted as `system`) or a format string.
    later_system: str = "refuse"
    user: str = "{content}"
    generation_prompt: str = ""  # opens every assistant turn; alone at the end with add_generation_prompt
    generation_prompt_always: bool = False  # appended at the end even without add_generation_prompt
    assistant: str = "{content}"  # trained
    assistant_end: str = ""  # end-of-turn text (EOS, <|im_end|> ...), trained with the answer
    assistant_suffix: str = ""  # text after the end-of-turn (a newline), not trained
    conversation_end: str = ""  # closes a conversation rendered without the generation prompt, not trained
    trim: bool = False  # strip whitespace around every message (the reference's `| trim`)
    # Put before every message's text unless it opens with an image (Idefics3: "User:<image>", "User: hi").
    content_lead: str = ""
    alternate: bool = False  # after the optional system message, roles must go user/assistant/user/...
    date_string: str = ""  # default {date_string}; with `date_format`, today's date in that strftime format
    date_format: str = ""
    reasoning: str = ""  # "qwen3": <think> blocks as Qwen3 renders them (last answer, reasoning_content)
    no_think_prompt: str = ""  # added to the generation prompt when rendering with enable_thinking=False

    PLACEMENTS: ClassVar[tuple[str, ...]] = ("turn", "first_user", "last_user", "collect", "refuse")
    LATER_SYSTEM_MODES: ClassVar[tuple[str, ...]] = ("refuse", "drop", "same")
    REASONING_MODES: ClassVar[tuple[str, ...]] = ("", "qwen3")

    def validate(self) -> None:
        super().validate()
        for attr in ("system", "user", "assistant"):
            if "{content}" not in getattr(self, attr):
                raise ValueError(f"chat template {self.name!r}: {attr} must contain '{{content}}'")
        if self.system_placement not in self.PLACEMENTS:
            raise ValueError(f"chat template {self.name!r}: system_placement must be one of "
                             f"{', '.join(self.PLACEMENTS)}, got {self.system_placement!r}")
        if self.later_system not in self.LATER_SYSTEM_MODES and "{content}" not in self.later_system:
            raise ValueError(f"chat template {self.name!r}: later_system must be one of "
                             f"{', '.join(self.LATER_SYSTEM_MODES)} or contain '{{content}}', "
                             f"got {self.later_system!r}")
        if self.reasoning not in self.REASONING_MODES:
            raise ValueError(f"chat template {self.name!r}: reasoning must be one of {self.REASONING_MODES}, "
                             f"got {self.reasoning!r}")
        if not isinstance(self.stop_words, tuple) or not isinstance(self.families, tuple):
            raise ValueError(f"chat template {self.name!r}: stop_words and families must be tuples")


@dataclass(frozen=True)
class TuningMethod(Entry):
    """A way to train: full, freeze, LoRA, QLoRA, ... `builder` is the import path of the function
    that turns a loaded model into a trainable one; `defaults` are the recipe's method settings."""

    kind: ClassVar[str] = "tuning method"
    builder: str = ""
    load_in_bits: int | None = None  # 4 / 8 when the base is loaded quantised (QLoRA)
    uses_peft: bool = True
    defaults: tuple[tuple[str, Any], ...] = ()
    # bitsandbytes settings for the quantised base (BitsAndBytesConfig fields) when the recipe gives none.
    quantization: tuple[tuple[str, Any], ...] = ()
    # Import path of the settings' config class (e.g. "peft:LoraConfig"): its fields are the accepted
    # settings, checked before the model loads. Empty: only the names in `defaults` are accepted.
    settings_class: str = ""
    # Import path of `fn(model, optimizer: dict, settings: dict, adapter) -> torch.optim.Optimizer` when the
    # method brings its own optimizer (LOMO, GaLore, BAdam, LISA ...); it gets the recipe's optimizer
    # settings (lr, weight_decay, betas, eps) and the method's. Empty: the recipe's optimizer, as usual.
    optimizer: str = ""
    # The update happens inside backward (LOMO: each gradient is applied and freed as soon as it is
    # computed), so the loop's backward is the update and its step does nothing.
    fused_update: bool = False
    # The method changes which parameters train while it runs (BAdam's blocks, LISA's sampled layers):
    # every checkpoint keeps all weights, not only those training at that step.
    switches_parameters: bool = False
    # What the method cannot be combined with, as (condition, why): conditions from `LIMITS`; the preflight
    # of `xtune train` and `xtune estimate` refuse such a run in one line each, saying why.
    limits: tuple[tuple[str, str], ...] = ()

    LIMITS: ClassVar[tuple[str, ...]] = ("deepspeed", "processes", "accumulation", "clip_grad", "float16",
                                         "quantized")

    def validate(self) -> None:
        super().validate()
        bad = [k for k, _ in self.limits if k not in self.LIMITS]
        if bad:
            raise ValueError(f"tuning method {self.name!r}: limits {bad} are not among {list(self.LIMITS)}")
        if self.optimizer and ":" not in self.optimizer:
            raise ValueError(
                f"tuning method {self.name!r}: optimizer must be 'module:function', got {self.optimizer!r}")
        if ":" not in self.builder:
            raise ValueError(
                f"tuning method {self.name!r}: builder must be 'module:function', got {self.builder!r}")
        if self.load_in_bits not in (None, 4, 8):
            raise ValueError(f"tuning method {self.name!r}: load_in_bits must be 4, 8 or None")
        if self.quantization and not self.load_in_bits:
            raise ValueError(f"tuning method {self.name!r}: quantization settings need load_in_bits 4 or 8")


@dataclass(frozen=True)
class Objective(Entry):
    """What a run optimises: SFT's cross-entropy, a preference loss (DPO, ORPO, SimPO, KTO), a reward model's
    Bradley-Terry loss or PPO. `loss` is the import path of a class built from the recipe's `objective`
    settings (over `defaults`); `data` says which rows it trains on, `head` which model it trains."""

    kind: ClassVar[str] = "objective"
    loss: str = ""
    # 'sft' conversations, 'pairs' (chosen + rejected), 'unpaired' (a completion + a label), 'prompts' (PPO)
    data: str = "sft"
    head: str = "causal_lm"  # 'causal_lm', or 'score': AutoModelForSequenceClassification, num_labels=1
    reference: bool = False  # needs reference log-probs (adapters off, a frozen copy or precomputed)
    defaults: tuple[tuple[str, Any], ...] = ()

    DATA: ClassVar[tuple[str, ...]] = ("sft", "pairs", "unpaired", "prompts")
    HEADS: ClassVar[tuple[str, ...]] = ("causal_lm", "score")

    def validate(self) -> None:
        super().validate()
        if ":" not in self.loss:
            raise ValueError(f"objective {self.name!r}: loss must be 'module:Class', got {self.loss!r}")
        if self.data not in self.DATA:
            raise ValueError(f"objective {self.name!r}: data must be one of {', '.join(self.DATA)}")
        if self.head not in self.HEADS:
            raise ValueError(f"objective {self.name!r}: head must be one of {', '.join(self.HEADS)}")


@dataclass(frozen=True)
class RewardFunction(Entry):
    """A reward for online RL (objective `grpo`): `function` is the import path of ``fn(prompts, completions,
    **kwargs) -> list[float | None]``, one value per completion (None: it does not apply to that sample),
    imported only when a recipe uses it. `needs` names the record columns it reads (they arrive as keyword
    arguments), so records without them are refused with the column's name rather than failing inside it."""

    kind: ClassVar[str] = "reward function"
    function: str = ""
    needs: tuple[str, ...] = ()

    def validate(self) -> None:
        super().validate()
        if ":" in self.name:  # a recipe's "pkg.module:function" is a user function, never a registered name
            raise ValueError(f"reward function name {self.name!r} must not contain ':'")
        if ":" not in self.function:
            raise ValueError(
                f"reward function {self.name!r}: function must be 'module:function', got {self.function!r}")
        if not isinstance(self.needs, tuple) or not all(isinstance(n, str) and n for n in self.needs):
            raise ValueError(f"reward function {self.name!r}: needs must be a tuple of column names")


@dataclass(frozen=True)
class DeepSpeedPreset(Entry):
    """A DeepSpeed JSON config; "auto" values are filled from the recipe at train time."""

    kind: ClassVar[str] = "deepspeed preset"
    config: tuple[tuple[str, Any], ...] = ()  # stored as items so the entry stays hashable

    def as_dict(self) -> dict[str, Any]:
        import copy

        return copy.deepcopy(dict(self.config))

    def validate(self) -> None:
        super().validate()
        if "zero_optimization" not in dict(self.config):
            raise ValueError(f"deepspeed preset {self.name!r} has no 'zero_optimization' section")


@dataclass(frozen=True)
class Recipe(Entry):
    """A recipe file and the metadata `list-cfg` shows without opening it."""

    kind: ClassVar[str] = "recipe"
    path: str = ""
    model: str = ""  # e.g. "internlm2_chat_7b"
    family: str = ""  # model adapter name, e.g. "internlm2"
    method: str = ""
    dataset: str = ""
    epochs: int = 0
    template: str = ""
    hub_id: str = ""
    stage: str = ""  # vision-language recipes: 'pretrain' (projector only) or 'finetune'
    objective: str = ""  # "" for SFT recipes
    sequence_parallel: int = 1  # long-context recipes: processes that share each row (`_spN` in the name)
    unsupported: str = ""  # why its model cannot be trained natively ("" when it can); list-cfg shows it

    def validate(self) -> None:
        super().validate()
        if not self.path.endswith(".py"):
            raise ValueError(f"recipe {self.name!r}: path must be a .py file, got {self.path!r}")


ENTRY_TYPES: dict[str, type[Entry]] = {
    "model_adapters": ModelAdapter,
    "models": Model,
    "checkpoint_conversions": CheckpointConversion,
    "dataset_maps": DatasetMap,
    "chat_templates": ChatTemplate,
    "tuning_methods": TuningMethod,
    "deepspeed_presets": DeepSpeedPreset,
    "objectives": Objective,
    "reward_functions": RewardFunction,
    "recipes": Recipe,
}


