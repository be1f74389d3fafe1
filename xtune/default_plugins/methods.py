"""Built-in tuning methods. Each builder lives in `xtune.methods` and uses peft / bitsandbytes;
`defaults` are the method settings a recipe starts from (the recipe's `method_cfg` overrides them)."""

from xtune.hookspecs import hookimpl
from xtune.registry import TuningMethod

_B = "xtune.methods"
_LORA = (("r", 64), ("lora_alpha", 16), ("lora_dropout", 0.1), ("target_modules", "auto"))
# QLoRA's base: 4-bit NF4 with double quantisation; 'auto' compute dtype follows the training precision.
_NF4 = (("load_in_4bit", True), ("bnb_4bit_quant_type", "nf4"), ("bnb_4bit_use_double_quant", True),
        ("bnb_4bit_compute_dtype", "auto"))

METHODS = [
    TuningMethod(name="full", builder=f"{_B}.full:apply", uses_peft=False,
                 description="train every parameter"),
    TuningMethod(name="freeze", builder=f"{_B}.freeze:apply", uses_peft=False,
                 defaults=(("trainable_layers", 2), ("trainable_modules", ())),
                 description="train only the last N decoder layers or the named modules"),
    TuningMethod(name="lora", builder=f"{_B}.lora:apply_lora", defaults=_LORA,
                 settings_class="peft:LoraConfig",
                 description="LoRA adapters (peft)"),
    TuningMethod(name="qlora", builder=f"{_B}.lora:apply_lora", load_in_bits=4, defaults=_LORA,
                 quantization=_NF4, settings_class="peft:LoraConfig",
                 description="LoRA on a 4-bit NF4 double-quantised base (bitsandbytes + peft)"),
    TuningMethod(name="dora", builder=f"{_B}.lora:apply_lora", defaults=_LORA + (("use_dora", True),),
                 settings_class="peft:LoraConfig", description="weight-decomposed LoRA (peft use_dora)"),
    TuningMethod(name="prefix_tuning", builder=f"{_B}.prompt:apply_prefix_tuning",
                 defaults=(("num_virtual_tokens", 20),), settings_class="peft:PrefixTuningConfig",
                 description="prefix tuning (peft)"),
    TuningMethod(name="prompt_tuning", builder=f"{_B}.prompt:apply_prompt_tuning",
                 defaults=(("num_virtual_tokens", 20),), settings_class="peft:PromptTuningConfig",
                 description="soft prompt tuning (peft)"),
    TuningMethod(name="p_tuning", builder=f"{_B}.prompt:apply_p_tuning",
                 defaults=(("num_virtual_tokens", 20), ("encoder_hidden_size", 128)),
                 settings_class="peft:PromptEncoderConfig", description="P-tuning (peft)"),
    TuningMethod(name="ia3", builder=f"{_B}.ia3:apply", settings_class="peft:IA3Config",
                 description="IA3 rescaling vectors (peft)"),
    TuningMethod(name="bitfit", builder=f"{_B}.bitfit:apply", uses_peft=False,
                 description="train only biases"),
]


@hookimpl
def register_tuning_methods(register):
    for method in METHODS:
        register(method)
