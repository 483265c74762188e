"""Turning a corpus into a checkpoint: configuration, optimisers, the training steps and loop,
resumable snapshots, plots, and the ``nextword train`` command."""
