"""Optimizers that a tuning method brings (LOMO, GaLore, APOLLO, BAdam, LISA), built inside mmengine.

mmengine builds an optimizer from the recipe's `optimizer=dict(type=...)` over the model's parameters. A
method whose entry names an `optimizer` builder (`xtune.registry.TuningMethod`) needs more: the model
itself (LOMO hooks every parameter), the parameters' names (GaLore projects the attention and MLP weights,
BAdam and LISA switch decoder layers) and the method's settings. `MethodOptimWrapperConstructor` calls
that builder with the recipe's optimizer settings; every other run keeps mmengine's default constructor.

`FusedUpdateOptimWrapper` is the training loop's optimizer interface for a method whose update happens
inside backward (`TuningMethod.fused_update`, LOMO / AdaLomo): `backward` is the update (after LOMO's own
norm pass when it clips), `step` and `zero_grad` have nothing left to do. The loop itself is unchanged.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

CONSTRUCTOR = "MethodOptimWrapperConstructor"
FUSED_WRAPPER = "FusedUpdateOptimWrapper"


def method_optimizer_cfg(out: dict, method, settings: dict, adapter) -> dict:
    """`out` (mmengine's optim wrapper config) with the method's optimizer builder wired in."""
    if not method.optimizer:
        return out
    register()
    out = dict(out, constructor=CONSTRUCTOR)
    out["paramwise_cfg"] = dict(
        builder=method.optimizer, settings=dict(settings), method=method.name,
        adapter=dict(layers_path=getattr(adapter, "layers_path", "model.layers"),
                     lora_target_modules=getattr(adapter, "lora_target_modules", "all-linear")))
    if method.fused_update:
        out.pop("clip_grad", None)  # refused by the preflight; LOMO clips with its own settings
        out.update(type=FUSED_WRAPPER, dtype=out.get("dtype"))
        out.pop("loss_scale", None)
    return out


def register() -> None:
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS

    if CONSTRUCTOR not in OPTIM_WRAPPER_CONSTRUCTORS.module_dict:
        OPTIM_WRAPPER_CONSTRUCTORS.register_module(name=CONSTRUCTOR, module=_constructor())
    if FUSED_WRAPPER not in OPTIM_WRAPPERS.module_dict:
        OPTIM_WRAPPERS.register_module(name=FUSED_WRAPPER, module=_fused_wrapper())


def _constructor():
    class MethodOptimWrapperConstructor:
        def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
            self.cfg = dict(optim_wrapper_cfg)
            self.method = dict(paramwise_cfg or {})

        def __call__(self, model):
            from mmengine.registry import OPTIM_WRAPPERS

            from xtune.errors import ConfigError
            from xtune.registry import import_object
            from xtune.schedule import unwrap_model

            wrapped = unwrap_model(model)
            if any(p.requires_grad for p in getattr(wrapped, "heads", {}).parameters()):
                raise ConfigError(f"method {self.method['method']!r} trains the language model only; this "
                                  "objective also trains a value head beside it: use lora or full")
            cfg = dict(self.cfg)
            optimizer = dict(cfg.pop("optimizer"))
            optimizer.pop("type", None)
            build = import_object(self.method["builder"])
            adapter = SimpleNamespace(**self.method["adapter"])
            built = build(wrapped.llm, optimizer, self.method["settings"], adapter)
            cfg.setdefault("type", "OptimWrapper")
            return OPTIM_WRAPPERS.build(dict(cfg, optimizer=built))

    return MethodOptimWrapperConstructor


def _fused_wrapper():
    import torch
    from mmengine.optim import OptimWrapper

    class FusedUpdateOptimWrapper(OptimWrapper):
        """The update is backward's (see the module docstring); autocast when the run trains in 16 bits."""

        def __init__(self, optimizer, dtype: str | None = None, **kwargs):
            super().__init__(optimizer, **kwargs)
            self.cast_dtype = getattr(torch, dtype) if dtype else None

        @contextlib.contextmanager
        def optim_context(self, model):
            if self.cast_dtype is None:
                yield
                return
            device = "cuda" if torch.cuda.is_available() else "cpu"
            with torch.autocast(device, dtype=self.cast_dtype):
                yield

        def backward(self, loss, **kwargs) -> None:
            lr = self.optimizer.param_groups[0]["lr"]
            if getattr(self.optimizer, "clip_grad_norm", None):
                self.optimizer.grad_norm(loss)  # LOMO's first pass: the gradients' norm, nothing applied
            self.optimizer.fused_backward(loss, lr)
            self._inner_count += 1

        def step(self, **kwargs) -> None:
            pass

        def zero_grad(self, **kwargs) -> None:
            pass

    return FusedUpdateOptimWrapper
