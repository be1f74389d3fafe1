"""LOMO and AdaLomo (the `lomo-optim` package): full-parameter training that keeps no gradients.

Each parameter's gradient is applied the moment backward computes it and then freed (LOMO: plain SGD;
AdaLomo: Adafactor-like factored second moments, so a few vectors per matrix), so neither a gradient
buffer nor AdamW's two moments exist. The update is fused into backward: the training loop's backward is
the update (`xtune.engine.optim_build.FusedUpdateOptimWrapper`) and its optimizer step does nothing.
Hence what LOMO cannot do (the method's `limits`): accumulate micro-batches (the first one's gradient is
already applied), clip by the ordinary norm (it needs all gradients at once; `clip_grad_norm` here is
LOMO's own, a second backward pass that measures the norm first), or run under DDP / DeepSpeed (the update
would happen before the processes average their gradients).
"""

from __future__ import annotations

import contextlib

from xtune.methods.common import check_settings, train_all

LOMO_SETTINGS = ("clip_grad_norm", "clip_grad_value")
ADALOMO_SETTINGS = LOMO_SETTINGS + ("loss_scale", "clip_threshold", "decay_rate")


def apply_lomo(model, settings: dict, adapter=None):
    return _train_all(model, "lomo", settings, LOMO_SETTINGS)


def apply_adalomo(model, settings: dict, adapter=None):
    return _train_all(model, "adalomo", settings, ADALOMO_SETTINGS)


def _train_all(model, method: str, settings: dict, allowed):
    check_settings(method, settings, allowed)
    return train_all(model)


def build_lomo(model, optimizer: dict, settings: dict, adapter=None):
    from lomo_optim import Lomo

    return Lomo(model, lr=float(optimizer.get("lr", 1e-3)),
                weight_decay=float(optimizer.get("weight_decay", 0.0) or 0.0), **_clip(settings))


def build_adalomo(model, optimizer: dict, settings: dict, adapter=None):
    extra = {k: settings[k] for k in ("loss_scale", "clip_threshold", "decay_rate")
             if settings.get(k) is not None}
    with _state_on_parameter_device(model):
        return _AdaLomo()(model, lr=float(optimizer.get("lr", 1e-3)),
                          weight_decay=float(optimizer.get("weight_decay", 0.0) or 0.0), **_clip(settings),
                          **extra)


def _clip(settings: dict) -> dict:
    return {k: (float(settings[k]) if settings.get(k) else None) for k in LOMO_SETTINGS}


@contextlib.contextmanager
def _state_on_parameter_device(model):
    """AdaLomo (lomo-optim 0.1.1) creates its factored moments with `.cuda()`; on a machine without CUDA
    they go to the parameters' device instead, only while it is being built."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    device = next(model.parameters()).device
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(device)
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _AdaLomo():
    """AdaLomo whose state dict carries its moments and step count (lomo-optim keeps them in plain dicts
    outside `Optimizer.state`, so a resumed run would restart them from zero)."""
    from lomo_optim import AdaLomo

    class AdaLomoWithState(AdaLomo):
        _MOMENTS = ("exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col")

        def state_dict(self):
            out = super().state_dict()
            out["adalomo"] = {"step_num": self.step_num,
                              **{k: dict(getattr(self, k)) for k in self._MOMENTS}}
            return out

        def load_state_dict(self, state_dict):
            state_dict = dict(state_dict)
            own = state_dict.pop("adalomo", None)
            super().load_state_dict(state_dict)
            if own is not None:
                self.step_num = int(own["step_num"])
                for key in self._MOMENTS:
                    for name, tensor in own[key].items():
                        getattr(self, key)[name].copy_(tensor)

    return AdaLomoWithState
