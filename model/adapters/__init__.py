"""Adapters that plug nextword into other tools (decoders), each an optional dependency."""
