"""LISA, layer-wise importance sampling (Pan et al., 2024): every `step_interval` optimizer steps,
`activated_layers` decoder layers are drawn at random to train; the rest of the layers stay frozen until
they are drawn. What lies outside the decoder layers (embeddings, final norm, output layer) always trains,
as in the paper.

AdamW keeps moments only for what trains now: when a layer leaves the sample its moments are dropped (as
BAdam drops a finished block's), so the optimizer holds the sampled layers' states, not all of them. The
draw for period k comes from a generator seeded with (seed, k), so a resumed run samples the same layers.
The trainable set changes during the run: DDP and DeepSpeed are refused and checkpoints keep all weights.
"""

from __future__ import annotations

import logging

from xtune.errors import ConfigError
from xtune.methods.badam import adamw_settings, decoder_layers
from xtune.methods.common import check_settings, train_all

log = logging.getLogger("xtune")
SETTINGS = ("activated_layers", "step_interval", "seed")


def apply_lisa(model, settings: dict, adapter=None):
    check_settings("lisa", settings, SETTINGS)
    return train_all(model)  # the optimizer freezes the layers it has not drawn


def build_lisa(model, optimizer: dict, settings: dict, adapter=None):
    prefix, count = decoder_layers(model, adapter)
    active = int(settings.get("activated_layers", 2))
    if not 1 <= active <= count:
        raise ConfigError(f"method_cfg.activated_layers={active} must be between 1 and the model's {count} "
                          "decoder layers")
    named = list(model.named_parameters())
    layers = [[p for n, p in named if n.startswith(f"{prefix}.{i}.")] for i in range(count)]
    return _LayerSamplingAdamW()(list(model.parameters()), layers=layers, active=active,
                                 interval=int(settings.get("step_interval", 20)),
                                 seed=int(settings.get("seed", 0) or 0), **adamw_settings(optimizer))


def _LayerSamplingAdamW():
    import torch

    class LayerSamplingAdamW(torch.optim.AdamW):
        """AdamW over every parameter whose decoder layers take turns (see the module docstring)."""

        xtune_switches_parameters = True

        def __init__(self, params, *, layers, active: int, interval: int, seed: int, **kwargs):
            super().__init__(params, **kwargs)
            self.layers, self.active, self.interval, self.seed = layers, active, max(1, interval), seed
            self.steps_taken = 0
            self.sample(0)

        def drawn(self, period: int) -> list[int]:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + period)
            return sorted(torch.randperm(len(self.layers), generator=generator)[: self.active].tolist())

        def sample(self, period: int) -> None:
            drawn = set(self.drawn(period))
            for index, params in enumerate(self.layers):
                for p in params:
                    p.requires_grad_(index in drawn)
                    if index not in drawn:
                        p.grad = None
                        self.state.pop(p, None)
            log.info("LISA: layers %s train from step %d", sorted(drawn), self.steps_taken + 1)

        @torch.no_grad()
        def step(self, closure=None):
            loss = super().step(closure)
            self.steps_taken += 1
            if self.steps_taken % self.interval == 0:
                self.sample(self.steps_taken // self.interval)
            return loss

        def state_dict(self):
            out = super().state_dict()
            out["lisa"] = {"steps_taken": self.steps_taken}
            return out

        def load_state_dict(self, state_dict) -> None:
            state_dict = dict(state_dict)
            own = state_dict.pop("lisa")
            self.steps_taken = int(own["steps_taken"])
            self.sample(self.steps_taken // self.interval)
            super().load_state_dict(state_dict)

    return LayerSamplingAdamW
