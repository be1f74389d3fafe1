"""A short model card (README.md) and a machine-readable record (xtune_info.json) for exported folders.

The card says where the weights came from — recipe, base model, method, data, chat template, steps and
final loss — and how to load them without xtune. `merge` reads the adapter's record to describe the
merged model, so the provenance survives both steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INFO_FILE = "xtune_info.json"


def training_info(cfg, *, recipe: str, step: int | None, final_loss: float | None, method: str,
                  uses_peft: bool) -> dict[str, Any]:
    """What an export records about the run, from the recipe's settings."""
    data = cfg.get("train_dataset") or {}
    method_cfg = {k: v for k, v in dict(cfg.get("method_cfg") or {}).items() if k != "type"}
    return {"recipe": recipe, "base_model": str(cfg.model.get("pretrained_model_name_or_path", "")),
            "method": method,
            "method_settings": {k: v for k,
                                v in method_cfg.items() if isinstance(v, (str, int, float, bool, list))},
            "kind": "adapter" if uses_peft else "full model", "dataset_map": data.get("dataset_map"),
            "data_path": data.get("data_path"), "prompt_template": data.get("prompt_template"),
            "max_length": data.get("max_length"), "steps": step,
            "final_loss": None if final_loss is None else round(float(final_loss), 4),
            **({"objective": cfg.objective.get("type")} if cfg.get("objective") else {})}


def write_info(out: str | Path, info: dict[str, Any]) -> None:
    Path(out, INFO_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False, default=str) + "\n",
                                    encoding="utf-8")


def read_info(folder: str | Path) -> dict[str, Any]:
    path = Path(folder, INFO_FILE)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _row(name: str, value: Any) -> str:
    return f"| {name} | {value} |" if value not in (None, "", {}) else ""


def _rows(info: dict[str, Any], base: str, merged_from: str | None) -> list[str]:
    """The card's table: where the weights came from, one row per known fact."""
    loss = info.get("final_loss")
    data = info.get("dataset_map") or ""
    if info.get("data_path"):
        data = f"{data} (`{info['data_path']}`)" if data else f"`{info['data_path']}`"
    settings = ", ".join(f"{k}={v}" for k, v in (info.get("method_settings") or {}).items())
    rows = [_row("recipe", f"`{info['recipe']}`" if info.get("recipe") else None),
            _row("base model", f"`{base}`"),
            _row("method", f"{info.get('method', '')}" + (f" ({settings})" if settings else "")),
            _row("merged from adapter", f"`{merged_from}`" if merged_from else None), _row("data", data),
            _row("chat template",
                 f"`{info['prompt_template']}` (saved as `chat_template.jinja`)"
                 if info.get("prompt_template") else None), _row("max length", info.get("max_length")),
            _row("optimizer steps", info.get("steps")),
            _row("final training loss", f"{loss:.4f}" if isinstance(loss, (int, float)) else None)]
    return [r for r in rows if r]


def render_card(info: dict[str, Any], *, title: str, merged_from: str | None = None) -> str:
    """The README.md text for an exported folder described by `info`."""
    adapter = info.get("kind") == "adapter" and not merged_from
    base = info.get("base_model") or "unknown"
    vision = info.get("modality") == "vision-language"
    auto, loader = ("AutoModelForImageTextToText", "AutoProcessor") if vision else ("AutoModelForCausalLM",
                                                                                 "AutoTokenizer")
    chat = "xtune chat PATH" + (" --image PICTURE" if vision else "")
    tags = ["xtune", str(info.get("method") or "fine-tuned")] + (["merged"] if merged_from else [])
    header = (
        ["---", f"library_name: {'peft' if adapter else 'transformers'}", f"base_model: {base}", "tags:"]
              + [f"- {t}" for t in tags] + ["---", ""])
    if adapter and info.get("base_layout"):
        use = (
            f"The base is a {info['base_layout']} (docs/legacy_models.md): plain transformers 5 cannot load "
            f"`{base}` without its hub code, xtune converts it at load. Chat with "
            f"`{chat.replace('PATH', base)} --adapter PATH`, or merge into a standalone model that plain "
            f"transformers, vLLM and GGUF read: `xtune convert merge {base} PATH OUT` "
            f"(`--format original` for the family's own layout)."
        )
    elif adapter:
        use = (
            f"```python\nfrom peft import PeftModel\nfrom transformers import {auto}, {loader}\n\n"
            f'model = PeftModel.from_pretrained({auto}.from_pretrained("{base}"), "PATH")\n'
            f'tokenizer = {loader}.from_pretrained("PATH")\n```\n\n'
            f"or `{chat.replace('PATH', base)} --adapter PATH`; merge into a standalone model with "
            f"`xtune convert merge {base} PATH OUT`."
        )
    else:
        use = (
            f"```python\nfrom transformers import {auto}, {loader}\n\n"
            f'model = {auto}.from_pretrained("PATH")\n'
            f'tokenizer = {loader}.from_pretrained("PATH")\n```\n\nor `{chat}`.'
        )
    body = [f"# {title}", "",
            f"Fine-tuned with xtune from `{base}`"
            + (" (a LoRA-style adapter; load it on top of the base model)." if adapter else "."), "", "| | |",
            "|---|---|", *_rows(info, base, merged_from), "", "## Use", "", use, "",
            "`tokenizer.apply_chat_template` renders the conversation format the model was trained with.", ""]
    return "\n".join(header + body)


def write_card(out: str | Path, info: dict[str, Any], *, merged_from: str | None = None) -> None:
    out = Path(out)
    Path(out,
         "README.md").write_text(
             render_card(info, title=info.get("recipe") or out.name, merged_from=merged_from),
                                 encoding="utf-8")
