"""Interactive and scripted chat with a model, an adapter, or a quantised model."""
