"""Finding recipe files and reading their metadata without running them.

`list-cfg` must stay fast and import nothing heavy, so metadata comes from the generated
`index.json` for built-in recipes and from a plain `ast` read of top-level literals for any other
recipe file (a plugin's folder, a copied recipe). Nothing here executes a recipe.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

from xtune.errors import ConfigError, UsageError, did_you_mean
from xtune.fileio import looks_local
from xtune.registry import Recipe

INDEX_NAME = "index.json"
# Top-level recipe settings that list-cfg shows: metadata field -> recipe variable.
_METADATA_VARS = {
    "family": "model_adapter",
    "method": "method",
    "dataset": "dataset_map",
    "epochs": "max_epochs",
    "template": "prompt_template",
    "hub_id": "pretrained_model_name_or_path",
    "stage": "stage",  # vision-language (LLaVA) recipes
    "sequence_parallel": "sequence_parallel_size",  # long-context recipes
}


def builtin_recipe_dir() -> Path:
    """The folder of xtune's own recipes (the repo's recipes/, installed as the package xtune.recipes)."""
    spec = importlib.util.find_spec("xtune.recipes")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("xtune's recipe folder is missing from this installation (reinstall xtune)")
    return Path(list(spec.submodule_search_locations)[0])


def literal_assignments(path: Path) -> dict[str, object]:
    """Top-level `name = <literal>` assignments of a Python file, by name (later ones win)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: recipe is not valid Python: {exc.msg}") from None
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # an expression (e.g. a dict that uses other settings): not metadata
    return values


def objective_type(path: Path) -> str:
    """The `type` of a top-level `objective = dict(type=...)` ('' when the recipe has none: SFT)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "objective" and isinstance(node.value, ast.Call)):
            for keyword in node.value.keywords:
                if keyword.arg == "type" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return ""


def model_key(name: str, method: str) -> str:
    """`internlm2_chat_7b_qlora_oasst1_e3` -> `internlm2_chat_7b` (the part before the method; for LLaVA
    recipes the language model and the vision encoder)."""
    head, sep, _ = name.partition(f"_{method}_")
    return head if sep else name


def read_metadata(path: Path) -> Recipe:
    """A Recipe entry for any recipe file, read with `ast` (fast, executes nothing)."""
    values = literal_assignments(path)
    fields = {key: values.get(var, "") for key, var in _METADATA_VARS.items()}
    fields["epochs"] = fields["epochs"] if isinstance(fields["epochs"], int) else 0
    sp = fields["sequence_parallel"]
    fields["sequence_parallel"] = sp if isinstance(sp, int) and not isinstance(sp, bool) and sp > 0 else 1
    name = path.stem
    objective = objective_type(path)
    return Recipe(name=name, path=str(path), model=model_key(name, str(fields["method"])),
                  objective="" if objective == "sft" else objective,
                  **{k: v if k in ("epochs", "sequence_parallel") else str(v) for k, v in fields.items()})


def recipes_in_dir(folder: Path | str) -> list[Recipe]:
    """Every recipe under `folder`: from its index.json when present, else by reading each .py file."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        return [Recipe(name=name, path=str(folder / meta.pop("path")), **meta) for name, meta in data.items()]
    return [read_metadata(p) for p in sorted(folder.rglob("*.py")) if p.name != "__init__.py"]


def resolve_recipe(name_or_path: str, registry) -> Path:
    """A recipe name from the registry, or a path to a recipe file (e.g. one made by copy-cfg)."""
    candidate = Path(name_or_path).expanduser()
    if looks_local(name_or_path, (".py",)):
        if candidate.is_file():
            return candidate
        raise UsageError(f"recipe file {name_or_path!r} does not exist")
    if name_or_path in registry.recipes:
        return Path(registry.recipes.get(name_or_path).path)
    raise UsageError(
        f"unknown recipe {name_or_path!r}",
        hint=did_you_mean(name_or_path, registry.recipes.names()) or "see `xtune list-cfg`",
    )
