"""The networks and their layers: forward and backward passes, parameters, initialisation.

Knows nothing of text files, checkpoints or serving; everything else builds on it.
"""
