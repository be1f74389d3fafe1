"""Built-in DeepSpeed presets for `xtune train --deepspeed NAME`.

Batch size, accumulation, clipping and precision are "auto": the recipe is authoritative and the
engine fills them in, so one preset serves every recipe.
"""

from xtune.hookspecs import hookimpl
from xtune.registry import DeepSpeedPreset

_COMMON = {
    "gradient_accumulation_steps": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_clipping": "auto",
    "zero_allow_untested_optimizer": True,
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto", "initial_scale_power": 16},
    "steps_per_print": 10**10,
    "wall_clock_breakdown": False,
}
_OFFLOAD = {"device": "cpu", "pin_memory": True}


def _preset(name: str, description: str, zero: dict) -> DeepSpeedPreset:
    return DeepSpeedPreset(name=name, description=description,
                           config=tuple({**_COMMON, "zero_optimization": zero}.items()))


PRESETS = [
    _preset("zero1", "ZeRO stage 1: optimizer states sharded", {"stage": 1}),
    _preset("zero2", "ZeRO stage 2: optimizer states and gradients sharded",
            {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}),
    _preset("zero2_offload", "ZeRO stage 2 with optimizer states offloaded to CPU",
            {"stage": 2, "overlap_comm": True, "contiguous_gradients": True, "offload_optimizer": _OFFLOAD}),
    _preset("zero3", "ZeRO stage 3: parameters sharded too",
            {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
             "stage3_gather_16bit_weights_on_model_save": True}),
    _preset("zero3_offload", "ZeRO stage 3 with parameters and optimizer states offloaded to CPU",
            {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
             "offload_optimizer": _OFFLOAD, "offload_param": _OFFLOAD,
             "stage3_gather_16bit_weights_on_model_save": True}),
]


@hookimpl
def register_deepspeed_presets(register):
    for preset in PRESETS:
        register(preset)
