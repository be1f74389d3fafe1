"""What a tuning method cannot be combined with, as one line each for the preflight of `xtune train` and
`xtune estimate` (`xtune.engine.objective_setup.run_problems`). Reads the recipe and the registry only:
no torch, so `xtune estimate` stays light.

The conditions are the method entry's `limits` (`xtune.registry.TuningMethod.LIMITS`), each with the reason
the method gave; LoRA's `init` adds its own: LoftQ exists to make up for 4-bit rounding (QLoRA only), and
PiSSA / OLoRA rewrite the base weights, which a 4-bit base cannot hold.
"""

from __future__ import annotations


def method_problems(cfg, registry, *, deepspeed: str | None, processes: int = 1) -> list[str]:
    from xtune.methods.common import resolve_method

    method_cfg = cfg.get("method_cfg") or {}
    if method_cfg.get("type") not in registry.tuning_methods:
        return []  # reported by the registry lookups
    entry, settings = resolve_method(method_cfg, registry)
    optim = cfg.get("optim_wrapper") or {}
    quantized = bool(entry.load_in_bits or (cfg.get("model") or {}).get("quantization"))
    present = {
        "deepspeed": f"--deepspeed {deepspeed}" if deepspeed else "",
        "processes": f"{processes} processes" if processes > 1 else "",
        "accumulation": f"accumulative_counts={optim.get('accumulative_counts')}"
        if int(optim.get("accumulative_counts", 1) or 1) > 1 else "",
        "clip_grad": f"optim_wrapper.clip_grad={dict(optim.get('clip_grad'))}"
        if (optim.get("clip_grad") or {}).get("max_norm") else "",
        "float16": f"optim_wrapper.dtype={optim.get('dtype')}"
        if str(optim.get("dtype")) in ("float16", "fp16") else "",
        "quantized": "a quantised base (model.quantization)" if quantized and not entry.load_in_bits else "",
    }
    problems = [f"method {entry.name!r} does not combine with {present[key]}: {why}"
                for key, why in entry.limits if present.get(key)]
    from xtune.errors import ConfigError
    from xtune.methods.lora import init_name

    try:
        init = init_name(settings.get("init", "default"))
    except ConfigError as exc:
        return problems + [str(exc)]
    quantization = (cfg.get("model") or {}).get("quantization") or {}
    bits = entry.load_in_bits or (4 if quantization.get("load_in_4bit") else None)
    if init == "loftq" and bits != 4:
        problems.append(f"method_cfg.init='loftq' fits LoRA to a 4-bit base's rounding error, and method "
                        f"{entry.name!r} trains on an unquantised one: use qlora, or init='pissa'")
    if (init.startswith("pissa") or init == "olora") and bits:
        problems.append(f"method_cfg.init={init!r} rewrites the base weights, which a {bits}-bit base cannot "
                        "hold: use method lora (or init='loftq' with qlora)")
    return problems
