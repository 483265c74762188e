"""One training step and progress lines: the loop bodies a training script is built from."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from model.inference.evaluation import perplexity
from model.network.bidirectional import BiRNNLM, SentenceBatch
from model.network.layers import Grad
from model.network.recurrent import RNNLM, NetworkState
from model.text.batches import bptt_windows, target_mask
from model.text.vocab import Vocabulary
from model.training.optim import SGD, Adam, clip_scale


@dataclass
class StepResult:
    loss: float  # mean cross-entropy of the window, nats per counted token
    tokens: int  # counted targets in the window
    grad_norm: float  # global gradient norm before clipping


def train_step(
    net: RNNLM,
    optimizer: SGD | Adam,
    inputs: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray | None,
    state: NetworkState,
    clip: float | None,
    rng: np.random.Generator | None,
) -> tuple[StepResult, NetworkState]:
    """Forward, BPTT, clip by global norm, update; returns the result and the state to carry on.

    The carried state is a plain array: the next window starts from its value, and no gradient
    flows back into it (truncated BPTT).
    """
    loss, grads, state = net.loss_and_grads(inputs, targets, mask, state, rng)
    norm = apply_gradients(net.params, optimizer, grads, clip)
    tokens = targets.size if mask is None else int(mask.sum())
    return StepResult(loss, tokens, norm), state


def apply_gradients(
    params: dict[str, np.ndarray], optimizer: SGD | Adam, grads: dict[str, Grad], clip: float | None
) -> float:
    """Clip by global norm and update; returns the norm before clipping.

    Raises NonFiniteError before any weight changes when a gradient is NaN or infinite.
    """
    norm, scale = clip_scale(grads, clip)
    optimizer.step(params, grads, grad_scale=scale)  # clipping folded into the update
    return norm


def gap_train_step(
    net: BiRNNLM,
    optimizer: SGD | Adam,
    batch: SentenceBatch,
    clip: float | None,
    rng: np.random.Generator | None,
) -> StepResult:
    """One update of the gap-filling model on a batch of whole sentences."""
    loss, grads = net.loss_and_grads(batch, rng)
    norm = apply_gradients(net.params, optimizer, grads, clip)
    return StepResult(loss, len(batch.targets), norm)


def train_windows(
    net: RNNLM,
    optimizer: SGD | Adam,
    data: np.ndarray,
    vocab: Vocabulary,
    bptt: int,
    clip: float | None,
    rng: np.random.Generator | None,
    state: NetworkState | None = None,
) -> Iterator[StepResult]:
    """Train over batched data (T_total, N) window by window, carrying the hidden state."""
    state = net.init_state(data.shape[1]) if state is None else state
    for inputs, targets in bptt_windows(data, bptt):
        result, state = train_step(
            net, optimizer, inputs, targets, target_mask(targets, vocab), state, clip, rng
        )
        yield result


def format_perplexity(ppl: float | None, decimals: int = 2) -> str:
    """A perplexity for a log line: ``123.45``; ``7.461e+194`` above a million (a diverging run's
    would otherwise print hundreds of digits); ``inf`` where it overflows (None in metrics)."""
    if ppl is None or not math.isfinite(ppl):
        return "inf"
    return f"{ppl:.4g}" if ppl > 1e6 else f"{ppl:.{decimals}f}"


class Progress:
    """Plain progress lines every ``every`` seconds, for when stderr is no terminal.

    Docker, Compose and Kubernetes jobs have no TTY, so tqdm's bar is off there, and an epoch
    would pass in silence: these lines say where the run is and how long it has to go. The ETA
    is the whole run's: this epoch's windows left, ``epochs_after`` more epochs at this rate,
    and ``between`` seconds after each epoch (validation and saving, as the last epoch took;
    0 until one has ended). Early stopping can end the run sooner.
    """

    def __init__(
        self,
        every: float,
        desc: str,
        total: int,
        first: int,
        epochs_after: int = 0,
        between: float = 0.0,
    ) -> None:
        self.on = every > 0 and not sys.stderr.isatty()
        self.every, self.desc, self.total, self.first = every, desc, total, first
        self.epochs_after, self.between = epochs_after, between
        self.start = self.last = time.monotonic()

    def eta(self, step: int) -> tuple[float, float]:
        """Seconds left in (the epoch's windows, the whole run) after ``step`` windows."""
        rate = (step - self.first) / max(time.monotonic() - self.start, 1e-9)  # windows per s
        if rate <= 0:
            return math.inf, math.inf
        epoch = (self.total - step) / rate
        return epoch, epoch + self.between + self.epochs_after * (self.total / rate + self.between)

    def update(self, step: int, loss: float, speed: float) -> None:
        now = time.monotonic()
        if not self.on or now - self.last < self.every:
            return
        self.last = now
        epoch, run = self.eta(step)
        tqdm.write(
            f"{self.desc}: window {step}/{self.total} ({100 * step / self.total:.1f}%), "
            f"loss {loss:.3f}, ppl {format_perplexity(perplexity(loss), 1)}, {speed:,.0f} tok/s, "
            f"ETA {format_duration(run)} (this epoch {format_duration(epoch)})",
            file=sys.stderr,
        )


def format_duration(seconds: float) -> str:
    """1h02m03s, 4m05s or 12s."""
    if not math.isfinite(seconds):
        return "unknown"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
