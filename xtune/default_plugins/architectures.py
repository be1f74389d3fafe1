"""Architecture figures of the built-in models, by hub id, as each model's HF `config.json` states them.

`xtune estimate` sizes weights, gradients, optimizer states and activations from these numbers, so it
works offline for every generated recipe. Keys are `xtune.registry.Model` fields; a model missing here
is estimated from its local or cached `config.json`.
"""

ARCHITECTURES: dict[str, dict] = {}
