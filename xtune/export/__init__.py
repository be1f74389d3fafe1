"""From training output to Hugging Face folders: pth_to_hf, merge, GGUF -> HF, written atomically.

Nothing heavy is imported here (torch, transformers and peft load inside the functions), so the CLI can
import this package at start-up.
"""

from xtune.export.pth_to_hf import export_after_training

__all__ = ["export_after_training"]
