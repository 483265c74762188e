"""training.png: train and validation perplexity per epoch, with the learning rate.

matplotlib is an optional extra (``pip install 'nextword[plot]'``); without it there is no plot.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def plot_history(history: list[dict[str, Any]], path: Path) -> bool:
    """Draw the per-epoch metrics to ``path`` (atomically); False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(epochs, _points(history, "train_ppl"), "o-", label="train perplexity")
    ax.plot(epochs, _points(history, "valid_ppl"), "s-", label="validation perplexity")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    lr_axis = ax.twinx()
    lr_axis.step(
        epochs, [r["lr"] for r in history], "--", where="mid", color="gray", label="learning rate"
    )
    lr_axis.set_ylabel("learning rate")
    lines = ax.get_legend_handles_labels()[0] + lr_axis.get_legend_handles_labels()[0]
    labels = [str(line.get_label()) for line in lines]
    ax.legend(lines, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _points(history: list[dict[str, Any]], key: str) -> list[float]:
    """The values of ``key``; a perplexity that overflowed (null in metrics.jsonl) is a gap."""
    values = [r[key] for r in history]
    return [v if v is not None and math.isfinite(v) else math.nan for v in values]
