"""From checkpoint to Hugging Face artefacts: pth_to_hf and merge."""
