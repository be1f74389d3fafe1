"""GaLore (`galore-torch`) and APOLLO (`apollo-torch`): every weight trains, the optimizer's moments are
low-rank.

The gradient of each targeted 2-D weight (by default the attention and MLP projections, the model adapter's
LoRA targets) is projected onto `rank` directions (GaLore: from its SVD, recomputed every
`update_proj_gap` steps; APOLLO: a random projection used only to estimate a per-channel scaling of the
raw gradient), Adam's moments live in that small space, and the update is projected back (times `scale`).
Embeddings, norms and the output layer keep ordinary AdamW moments. Gradients are full size: the saving
is in the optimizer states. ZeRO hands an optimizer flat partitions instead of 2-D weights, so neither runs
under DeepSpeed.

The projectors are objects inside the optimizer state; checkpoints hold data only, so the state dict
carries each projector's tensors and numbers and loading rebuilds them (a resumed run continues with the
same projection instead of a new one).
"""

from __future__ import annotations

import re

from xtune.errors import ConfigError
from xtune.methods.common import check_settings, train_all

GALORE_SETTINGS = ("rank", "update_proj_gap", "scale", "proj_type", "target_modules")
APOLLO_SETTINGS = GALORE_SETTINGS + ("proj", "scale_type")


def apply_galore(model, settings: dict, adapter=None):
    check_settings("galore", settings, GALORE_SETTINGS)
    return train_all(model)


def apply_apollo(model, settings: dict, adapter=None):
    check_settings("apollo", settings, APOLLO_SETTINGS)
    return train_all(model)


def projected_parameters(model, targets, adapter=None) -> tuple[list, list]:
    """(names of the 2-D weights whose gradients are projected, the other trainable names). `targets`:
    'auto' (the model adapter's LoRA targets, else every linear layer but the output), 'all-linear',
    a list of module-name suffixes or a regular expression over module names."""
    import torch

    if targets in (None, "auto"):
        targets = adapter.lora_target_modules if adapter is not None else "all-linear"
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    chosen = set()
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is output or module.weight.ndim != 2:
            continue
        if _matches(name, targets):
            chosen.add(f"{name}.weight")
    if not chosen:
        raise ConfigError(f"method_cfg.target_modules={targets!r} matches no linear layer of this model",
                          hint="use 'all-linear', or names such as ['q_proj', 'v_proj']")
    projected, other = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (projected if name in chosen else other).append(name)
    return projected, other


def _matches(name: str, targets) -> bool:
    if targets == "all-linear":
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None or name.rsplit(".", 1)[-1] == targets
    return name.rsplit(".", 1)[-1] in set(targets)


def _groups(model, optimizer: dict, settings: dict, adapter, extra: dict) -> tuple[list, dict]:
    projected, other = projected_parameters(model, settings.get("target_modules"), adapter)
    params = dict(model.named_parameters())
    low_rank = dict(rank=int(settings["rank"]), update_proj_gap=int(settings["update_proj_gap"]),
                    scale=float(settings["scale"]), proj_type=str(settings["proj_type"]), **extra)
    groups = [{"params": [params[n] for n in other]}, {"params": [params[n] for n in projected], **low_rank}]
    kwargs = dict(lr=float(optimizer.get("lr", 1e-3)),
                  weight_decay=float(optimizer.get("weight_decay", 0.0) or 0.0))
    if optimizer.get("betas") is not None:
        kwargs["betas"] = tuple(optimizer["betas"])
    if optimizer.get("eps") is not None:
        kwargs["eps"] = float(optimizer["eps"])
    return [g for g in groups if g["params"]], kwargs


def build_galore(model, optimizer: dict, settings: dict, adapter=None):
    from galore_torch import GaLoreAdamW
    from galore_torch.galore_projector import GaLoreProjector

    groups, kwargs = _groups(model, optimizer, settings, adapter, {})
    cls = _with_projector_state(GaLoreAdamW, lambda group, state: GaLoreProjector(
        group["rank"], update_proj_gap=group["update_proj_gap"], scale=group["scale"],
        proj_type=group["proj_type"]))
    return cls(groups, no_deprecation_warning=True, **kwargs)


def build_apollo(model, optimizer: dict, settings: dict, adapter=None):
    from apollo_torch import APOLLOAdamW

    extra = dict(proj=str(settings.get("proj") or "random"), scale_type=str(settings.get("scale_type") or
                                                                            "channel"))
    groups, kwargs = _groups(model, optimizer, settings, adapter, extra)
    cls = _with_projector_state(APOLLOAdamW, None)  # APOLLO builds its own (_initialize_projector)
    return cls(groups, no_deprecation_warning=True, **kwargs)


def _with_projector_state(base, make_projector):
    """`base` (a GaLore / APOLLO AdamW) whose state dict holds each projector as plain data."""

    class ProjectedAdamW(base):
        def state_dict(self):
            out = super().state_dict()
            out["state"] = {index: {k: ({"projector": dict(vars(v))} if k == "projector" else v)
                                    for k, v in state.items()} for index, state in out["state"].items()}
            return out

        def load_state_dict(self, state_dict):
            saved = {index: state.get("projector") for index, state in state_dict["state"].items()}
            plain = {index: {k: v for k, v in state.items() if k != "projector"}
                     for index, state in state_dict["state"].items()}
            super().load_state_dict({**state_dict, "state": plain})
            params = [p for group in self.param_groups for p in group["params"]]
            groups = {id(p): group for group in self.param_groups for p in group["params"]}
            for index, projector in saved.items():
                if projector is None:
                    continue
                p = params[int(index)]
                state = self.state[p]
                rebuilt = self._initialize_projector(groups[id(p)], state) \
                    if hasattr(self, "_initialize_projector") else make_projector(groups[id(p)], state)
                for key, value in projector["projector"].items():
                    setattr(rebuilt, key, value.to(p.device) if hasattr(value, "to") else value)
                state["projector"] = rebuilt

    return ProjectedAdamW
