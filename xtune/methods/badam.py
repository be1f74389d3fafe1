"""BAdam (the `badam` package): full-parameter training one block at a time.

The decoder layers are the blocks; one trains (with its own fp32 copy and Adam moments) for
`switch_interval` optimizer steps, then the next one (`switch_mode`: ascending, descending, random or
fixed), so gradients and optimizer states exist for one layer only. Everything outside the layers
(embeddings, final norm, output layer) stays frozen, as BAdam's layer mode does. The trainable set changes
during the run, so DDP (built for a fixed set) and DeepSpeed are refused, and every checkpoint keeps all
weights (`TuningMethod.switches_parameters`).

For resuming: badam keeps its position (the active block, the steps taken, a random
order) in attributes, not in its state dict; here the state dict carries them, and loading makes the same
block active again with the moments it had.
"""

from __future__ import annotations

import logging
import warnings

from xtune.errors import ConfigError
from xtune.methods.common import check_settings, train_all

log = logging.getLogger("xtune")
SETTINGS = ("switch_interval", "switch_mode", "start_block")
MODES = ("ascending", "descending", "random", "fixed")


def apply_badam(model, settings: dict, adapter=None):
    check_settings("badam", settings, SETTINGS)
    if settings.get("switch_mode", "ascending") not in MODES:
        raise ConfigError(f"method_cfg.switch_mode={settings['switch_mode']!r} is not one of "
                          f"{', '.join(MODES)}")
    return train_all(model)  # the optimizer narrows this to one block (its first switch)


def decoder_layers(model, adapter) -> tuple[str, int]:
    """(the parameter-name prefix of the decoder layers, their number)."""
    path = adapter.layers_path if adapter is not None else "model.layers"
    node = model
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            raise ConfigError(f"the model has no decoder layer list at {path!r} (the model adapter's "
                              "layers_path): block-wise methods need one")
    return path, len(node)


def build_badam(model, optimizer: dict, settings: dict, adapter=None):
    import torch

    prefix, count = decoder_layers(model, adapter)
    base = torch.optim.AdamW(model.parameters(), **adamw_settings(optimizer))
    start = settings.get("start_block")
    with warnings.catch_warnings():  # "BAdam expects fp16/bf16 weights": fp32 CPU training is on purpose
        warnings.simplefilter("ignore")
        return _BlockOptimizer()(
            base_optimizer=base, named_parameters_list=list(model.named_parameters()),
            block_prefix_list=[[f"{prefix}.{i}."] for i in range(count)],
            switch_block_every=int(settings.get("switch_interval", 50)),
            switch_mode=str(settings.get("switch_mode", "ascending")),
            start_block=int(start) if start is not None else None, verbose=0)


def adamw_settings(optimizer: dict) -> dict:
    """The recipe's optimizer settings (lr, weight_decay, betas, eps) as torch AdamW keywords."""
    out = dict(lr=float(optimizer.get("lr", 1e-3)),
               weight_decay=float(optimizer.get("weight_decay", 0.0) or 0))
    if optimizer.get("betas") is not None:
        out["betas"] = tuple(optimizer["betas"])
    if optimizer.get("eps") is not None:
        out["eps"] = float(optimizer["eps"])
    return out


def _BlockOptimizer():
    from badam import BlockOptimizer

    class XtuneBlockOptimizer(BlockOptimizer):
        xtune_switches_parameters = True

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.__dict__.pop("state_dict", None)  # badam aliases the base optimizer's; ours is below

        def step(self, *args, **kwargs) -> None:
            """badam's step, switching after every `switch_interval` steps (badam 1.4 switches one step
            early, so its first block trains one step less than the others)."""
            self.step_single_gpu(*args, **kwargs)
            if self.global_step % self.switch_block_every == 0:
                self.switch_trainable_params()

        def switch_trainable_params(self, verbose=None) -> None:
            self.active_block = self.current_block_idx
            super().switch_trainable_params(verbose=0)
            log.info("BAdam: block %s trains from step %d", self.block_prefix_list[self.active_block][0],
                     self.global_step + 1)

        def state_dict(self):
            return {"base": self.base_optimizer.state_dict(),
                    "groups": [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups],
                    "badam": {"global_step": self.global_step, "active": self.active_block,
                              "next": self.current_block_idx,
                              "order": list(getattr(self, "block_order", []))}}

        def load_state_dict(self, state_dict) -> None:
            own = state_dict["badam"]
            for group, saved in zip(self.param_groups, state_dict["groups"], strict=True):
                group.update(saved)
            self.current_block_idx = int(own["active"])
            self.switch_trainable_params()  # fresh fp32 copies of the loaded weights, moments cleared
            self.base_optimizer.load_state_dict(state_dict["base"])
            self.global_step, self.current_block_idx = int(own["global_step"]), int(own["next"])
            if self.switch_mode == "random":
                self.block_order = [int(i) for i in own["order"]]

    return XtuneBlockOptimizer
