"""Built-in tuning methods. Each builder lives in `xtune.methods` and uses peft / bitsandbytes;
`defaults` are the method settings a recipe starts from (the recipe's `method_cfg` overrides them)."""

from xtune.hookspecs import hookimpl
from xtune.registry import TuningMethod

_B = "xtune.methods"
# init: how the adapters start: 'default' (peft's: B = 0), 'gaussian', 'pissa' (the weight's principal
# components; 'pissa_niter_N' by a randomised SVD), 'olora' (QR), or 'loftq' (QLoRA: A and B make up for the
# 4-bit base's quantisation error)
_LORA = (("r", 64), ("lora_alpha", 16), ("lora_dropout", 0.1), ("target_modules", "auto"),
         ("init", "default"))
_FULL_ONLY = ("quantized", "the method updates every weight itself, and 4-bit or 8-bit weights cannot be "
                           "updated: drop the quantization section or use qlora")
_SWITCHING = (("deepspeed", "it changes which layers train during the run, which DeepSpeed's partitioning "
                            "does not follow"),
              ("processes", "it changes which layers train during the run, and DDP reduces a fixed set of "
                            "gradients: train in one process"), _FULL_ONLY)
_FUSED = (("accumulation", "it applies each gradient the moment backward computes it, so there is nothing to "
                           "accumulate: set accumulative_counts=1 (a larger batch_size instead)"),
          ("clip_grad", "ordinary clipping needs all gradients at once, which it never holds: set "
                        "optim_wrapper.clip_grad=None and method_cfg.clip_grad_norm (its own, a second "
                        "backward pass)"),
          ("processes", "its update happens inside backward, before processes could average their gradients: "
                        "train in one process"),
          ("deepspeed", "its update happens inside backward, which xtune does not wire into DeepSpeed: drop "
                        "--deepspeed"),
          ("float16", "fp16 needs a loss scale it does not get here: train in bf16 or fp32"), _FULL_ONLY)
_PROJECTED = (("deepspeed", "ZeRO hands the optimizer flat partitions, and it projects 2-D gradients: drop "
                            "--deepspeed"), _FULL_ONLY)
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
    # Low-memory full-parameter training: the method brings its own optimizer (`optimizer=`).
    TuningMethod(name="lomo", builder=f"{_B}.lomo:apply_lomo", optimizer=f"{_B}.lomo:build_lomo",
                 uses_peft=False, fused_update=True, limits=_FUSED,
                 defaults=(("clip_grad_norm", None), ("clip_grad_value", None)),
                 description="LOMO: every weight, SGD fused into backward, no gradients or optimizer states"),
    TuningMethod(name="adalomo", builder=f"{_B}.lomo:apply_adalomo", optimizer=f"{_B}.lomo:build_adalomo",
                 uses_peft=False, fused_update=True, limits=_FUSED,
                 defaults=(("clip_grad_norm", None), ("clip_grad_value", None), ("loss_scale", 1024),
                           ("clip_threshold", 1.0), ("decay_rate", -0.8)),
                 description="AdaLomo: LOMO with factored (Adafactor-like) second moments"),
    TuningMethod(name="galore", builder=f"{_B}.projected:apply_galore",
                 optimizer=f"{_B}.projected:build_galore",
                 uses_peft=False, limits=_PROJECTED,
                 defaults=(("rank", 16), ("update_proj_gap", 200), ("scale", 2.0), ("proj_type", "std"),
                           ("target_modules", "auto")),
                 description="GaLore: every weight, AdamW moments of the projections' gradients in low rank"),
    TuningMethod(name="apollo", builder=f"{_B}.projected:apply_apollo",
                 optimizer=f"{_B}.projected:build_apollo",
                 uses_peft=False, limits=_PROJECTED,
                 defaults=(("rank", 16), ("update_proj_gap", 200), ("scale", 32.0), ("proj_type", "std"),
                           ("proj", "random"), ("scale_type", "channel"), ("target_modules", "auto")),
                 description="APOLLO: every weight, SGD-like memory, AdamW-like channel-wise learning rates"),
    TuningMethod(name="badam", builder=f"{_B}.badam:apply_badam", optimizer=f"{_B}.badam:build_badam",
                 uses_peft=False, switches_parameters=True, limits=_SWITCHING,
                 defaults=(("switch_interval", 50), ("switch_mode", "ascending"), ("start_block", None)),
                 description="BAdam: full AdamW updates of one decoder layer at a time, in turn"),
    TuningMethod(name="lisa", builder=f"{_B}.lisa:apply_lisa", optimizer=f"{_B}.lisa:build_lisa",
                 uses_peft=False, switches_parameters=True, limits=_SWITCHING,
                 defaults=(("activated_layers", 2), ("step_interval", 20), ("seed", 0)),
                 description="LISA: embeddings and head plus a few randomly drawn decoder layers at a time"),
]


@hookimpl
def register_tuning_methods(register):
    for method in METHODS:
        register(method)
