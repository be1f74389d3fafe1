"""The data pipeline: source -> dataset map -> conversation -> template segments -> tokens and labels -> packing."""
