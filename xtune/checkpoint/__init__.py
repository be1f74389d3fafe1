"""Training checkpoints on disk: their layout in a work dir, and reading the trained weights back."""
