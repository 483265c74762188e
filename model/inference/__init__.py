"""Trained models answering questions: the servable-model interface and its kinds, the prefix
cache, perplexity on a file, and checkpoints (the only place that reads which kind a model is)."""
