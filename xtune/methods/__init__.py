"""Tuning method builders (full, freeze, LoRA / QLoRA / DoRA, prompt methods, IA3, BitFit), on peft and
bitsandbytes."""
