"""One training step, stream evaluation and progress lines: the loop bodies a training script is
built from."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from model.network.bidirectional import BiRNNLM, SentenceBatch
from model.network.layers import Grad, NonFiniteError
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


def evaluate_gaps(
    net: BiRNNLM, sentences: list[np.ndarray], batch_size: int = 64
) -> tuple[float, int]:
    """Gap-filling cross-entropy: mean -log P(w_t | rest of its sentence) over every word."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        chunk = [sentences[i] for i in order[start : start + batch_size]]
        lps = net.word_log_probs(
            SentenceBatch.from_sentences(chunk, Vocabulary.bos_id, Vocabulary.eos_id)
        )
        total -= float(lps.astype(np.float64).sum())
        check_finite(total, count, len(lps))
        count += len(lps)
    return total / max(count, 1), count


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


def evaluate(net: RNNLM, data: np.ndarray, vocab: Vocabulary, bptt: int = 64) -> tuple[float, int]:
    """Cross-entropy (nats per counted token) and token count of batched data (T_total, N).

    Runs without dropout, carrying the state across windows like training does. Raises
    NonFiniteError when the network's output stops being finite: a NaN is no perplexity.
    """
    state = net.init_state(data.shape[1])
    total, count = 0.0, 0
    for inputs, targets in bptt_windows(data, bptt):
        with np.errstate(over="ignore", invalid="ignore"):  # check_finite reports it instead
            log_probs, state = net.log_probs(inputs, state)  # (t, N, V)
        picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        mask = target_mask(targets, vocab)
        total -= float(np.dot(picked.ravel().astype(np.float64), mask.ravel()))
        check_finite(total, count, int(mask.sum()))
        count += int(mask.sum())
    return total / max(count, 1), count


def check_finite(total: float, done: int, more: int) -> None:
    """Raise NonFiniteError unless the running sum of -log P is still finite.

    A network whose hidden state grows along the stream (a ReLU RNN with ‖Wh‖₂ > 1) overflows
    after enough tokens; the sum then turns infinite or NaN, and stays so.
    """
    if not math.isfinite(total):
        raise NonFiniteError(
            f"the model's log-probabilities turn non-finite within tokens {done + 1}–"
            f"{done + more} of the stream (a hidden state growing along it overflows, or a "
            "weight is not finite)"
        )


def perplexity(cross_entropy: float) -> float:
    """exp(cross-entropy in nats); inf where that overflows a float (cross-entropy above
    709.78), instead of an OverflowError."""
    try:
        return math.exp(cross_entropy)
    except OverflowError:
        return math.inf


def format_perplexity(ppl: float | None, decimals: int = 2) -> str:
    """A perplexity for a log line: ``123.45``; ``7.461e+194`` above a million (a diverging run's
    would otherwise print hundreds of digits); ``inf`` where it overflows (None in metrics)."""
    if ppl is None or not math.isfinite(ppl):
        return "inf"
    return f"{ppl:.4g}" if ppl > 1e6 else f"{ppl:.{decimals}f}"


class Progress:
    """Plain progress lines every ``every`` seconds, for when stderr is no terminal.

    Docker, Compose and Kubernetes jobs have no TTY, so tqdm's bar is off there, and an epoch
    would pass in silence: these lines say where the run is and how long the epoch has to go.
    """

    def __init__(self, every: float, desc: str, total: int, first: int) -> None:
        self.on = every > 0 and not sys.stderr.isatty()
        self.every, self.desc, self.total, self.first = every, desc, total, first
        self.start = self.last = time.monotonic()

    def update(self, step: int, loss: float, speed: float) -> None:
        now = time.monotonic()
        if not self.on or now - self.last < self.every:
            return
        self.last = now
        rate = (step - self.first) / max(now - self.start, 1e-9)  # windows per second
        eta = (self.total - step) / rate if rate > 0 else math.inf
        tqdm.write(
            f"{self.desc}: window {step}/{self.total} ({100 * step / self.total:.1f}%), "
            f"loss {loss:.3f}, ppl {format_perplexity(perplexity(loss), 1)}, {speed:,.0f} tok/s, "
            f"ETA {format_duration(eta)}",
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
