"""Cross-entropy and perplexity of a model on text: a file, a batched stream, or sentences.

``evaluate_file`` is what ``nextword eval`` prints. Each kind of model scores by the convention
of its task (``LanguageModel.evaluate``): a left-to-right model by the Penn Treebank one, one
stream ``<s> w_1 … w_n </s>`` per sentence with the state running on; a gap-filling model every
word from both sides of it. The two perplexities are not comparable. Natural logarithms.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from model.inference.language_model import LanguageModel
from model.network.bidirectional import BiRNNLM, SentenceBatch
from model.network.layers import NonFiniteError
from model.network.recurrent import RNNLM
from model.text.batches import PaddedSentences, bptt_windows, target_mask
from model.text.corpus import load_sentences
from model.text.vocab import Vocabulary


def evaluate_file(
    lm: LanguageModel, path: str | Path, split: str = "lines", batch_size: int = 1
) -> dict[str, Any]:
    """{"tokens", "cross_entropy", "perplexity", "oov_rate", "task"} of ``lm`` on the file, and
    for a next-word model "isolated_cross_entropy" and "isolated_perplexity": each sentence
    read on its own (from the start state), as the service scores text. A model with a
    spelling model adds "open_" figures of both: over every word, each word outside the
    vocabulary scored by its spelling's share of ``<unk>`` (the other figures give it all of
    ``<unk>``, the closed-vocabulary convention of published Penn Treebank figures).

    With ``batch_size`` 1 (the default) a left-to-right model reads the whole file as one
    sequence, exactly as published Penn Treebank figures are computed. Raises NonFiniteError
    when there is no perplexity: the model's output is not finite on the text, or the
    cross-entropy is so high (above ~709.78 nats) that its exponential overflows.
    """
    sentences = load_sentences(path, lm.tokenizer, split)
    result = lm.evaluate(sentences, batch_size)
    figures: dict[str, Any] = {
        "tokens": result.tokens,
        "cross_entropy": round(result.cross_entropy, 6),
        "perplexity": finite_perplexity(result.cross_entropy),
        "oov_rate": round(result.oov_rate, 6),
        "task": result.task,
    }
    if result.isolated_cross_entropy is not None:
        figures["isolated_cross_entropy"] = round(result.isolated_cross_entropy, 6)
        figures["isolated_perplexity"] = finite_perplexity(result.isolated_cross_entropy)
    if lm.spelling is not None:  # the open vocabulary: each OOV word's share of <unk> added
        spelled = math.fsum(
            lm.spelling.log_prob(w) for s in sentences for w in s if w not in lm.vocab
        )
        # every target of every sentence counts in the isolated figure, and in the stream's when
        # it is read as one sequence (batched columns drop their heads: no exact figure then)
        counts = {"isolated_": sum(len(s) + 1 for s in sentences)}
        if batch_size == 1:
            counts[""] = result.tokens
        for name, count in counts.items():
            closed = figures.get(f"{name}cross_entropy")
            if closed is not None:
                open_ce = closed - spelled / max(count, 1)
                figures[f"open_{name}cross_entropy"] = round(open_ce, 6)
                figures[f"open_{name}perplexity"] = finite_perplexity(open_ce)
    return figures


def stream_cross_entropy(
    net: RNNLM, data: np.ndarray, vocab: Vocabulary, bptt: int = 64
) -> tuple[float, int]:
    """Cross-entropy (nats per counted token) and token count of batched data (T_total, N).

    Runs without dropout, carrying the state across windows like training does. Raises
    NonFiniteError when the network's output stops being finite: a NaN is no perplexity.
    """
    state = net.init_state(data.shape[1])
    total, count = 0.0, 0
    for inputs, targets in bptt_windows(data, bptt):
        with np.errstate(over="ignore", invalid="ignore"):  # check_finite reports it instead
            picked, state = net.target_log_probs(inputs, targets, state)  # (t, N)
        mask = target_mask(targets, vocab)
        total -= float(np.dot(picked.ravel().astype(np.float64), mask.ravel()))
        check_finite(total, count, int(mask.sum()))
        count += int(mask.sum())
    return total / max(count, 1), count


def stream_token_log_probs(
    net: RNNLM, stream: np.ndarray, vocab: Vocabulary, bptt: int = 64
) -> np.ndarray:
    """log P of each counted target of one id stream (T_total,), read as one sequence with the
    state running on (``<s>`` targets, given and not predicted, left out), float64."""
    state, parts = net.init_state(1), []
    for inputs, targets in bptt_windows(stream[:, None], bptt):
        with np.errstate(over="ignore", invalid="ignore"):
            lp, state = net.target_log_probs(inputs, targets, state)  # (t, 1)
        picked = lp[:, 0]
        parts.append(picked[targets[:, 0] != vocab.bos_id].astype(np.float64))
    return np.concatenate(parts) if parts else np.zeros(0)


def isolated_cross_entropy(
    net: RNNLM,
    sentences: list[np.ndarray],
    vocab: Vocabulary,
    batch_size: int = 64,
    window: int = 256,
) -> tuple[float, int]:
    """Cross-entropy of each sentence read on its own, ``<s> w_1 … w_n </s>`` from the
    network's start state (zero unless set): how /v1/score and /v1/rerank see text (the stream
    figure carries the state across sentences)."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = PaddedSentences.from_sentences(
            [sentences[i] for i in order[start : start + batch_size]], vocab
        )
        state = net.start_state(batch.inputs.shape[1])
        # in windows of the batch's time steps, the state carried: the same numbers, and the
        # memory of a window, however long a sentence is (a 5 MB line is one sentence)
        for t in range(0, len(batch.inputs), window):
            inputs, targets = batch.inputs[t : t + window], batch.targets[t : t + window]
            with np.errstate(over="ignore", invalid="ignore"):  # check_finite reports it instead
                picked, state = net.target_log_probs(inputs, targets, state)  # (t, N)
            mask = batch.mask[t : t + window]
            total -= float(np.dot(picked.ravel().astype(np.float64), mask.ravel()))
        tokens = int(batch.mask.sum())
        check_finite(total, count, tokens)
        count += tokens
    return total / max(count, 1), count


def gap_cross_entropy(
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


def finite_perplexity(cross_entropy: float) -> float:
    """e^cross-entropy, rounded; NonFiniteError when it overflows a float (JSON has no
    Infinity, and inf is no perplexity anyone can use)."""
    ppl = perplexity(cross_entropy)
    if not math.isfinite(ppl):
        raise NonFiniteError(
            f"the cross-entropy is {cross_entropy:.6g} nats; its perplexity e^{cross_entropy:.6g} "
            "overflows a float"
        )
    return round(ppl, 4)
