"""From training output to Hugging Face folders: pth_to_hf, merge, GGUF -> HF, written atomically.

Nothing heavy is imported at package level (torch, transformers and peft load inside the functions), so
the CLI can import these modules at start-up.
"""
