"""Loading models and tokenizers from hub ids, ModelScope ids, local folders and GGUF files."""
