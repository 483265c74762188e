"""Perplexity of a model on a text file, by the Penn Treebank convention.

The file is read as one stream, ``<s> w_1 … w_n </s>`` per sentence, with the hidden state running
on across sentences; every word and one ``</s>`` per sentence are counted (``<s>`` is given, not
predicted). Natural logarithms throughout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from model.inference.recurrent_lm import LanguageModel
from model.network.layers import NonFiniteError
from model.text.batches import sentence_stream, target_mask
from model.text.corpus import load_sentences
from model.training.steps import evaluate, evaluate_gaps, perplexity


def evaluate_file(
    lm: LanguageModel, path: str | Path, split: str = "lines", batch_size: int = 1
) -> dict[str, Any]:
    """{"tokens", "cross_entropy", "perplexity", "oov_rate"} of ``lm`` on the file.

    With ``batch_size`` 1 (the default) the whole file is one sequence, exactly as published
    Penn Treebank figures are computed; larger batches are faster and cut it into columns.
    Raises NonFiniteError when there is no perplexity: the model's output is not finite on the
    text, or the cross-entropy is so high (above ~709.78 nats) that its exponential overflows.
    """
    sentences = load_sentences(path, lm.tokenizer, split)
    if lm.bidirectional:
        return evaluate_gap_file(lm, sentences)
    stream = sentence_stream(sentences, lm.vocab)
    columns = max(1, min(batch_size, len(stream) // 2))
    steps = len(stream) // columns
    data = stream[: steps * columns].reshape(columns, steps).T  # (T_total, N), like batchify
    cross_entropy, tokens = evaluate(lm.net, data, lm.vocab)
    oov = sum(token not in lm.vocab for s in sentences for token in s)  # </s> is never OOV
    counted = int(target_mask(stream[1:], lm.vocab).sum())
    return {
        "tokens": tokens,
        "cross_entropy": round(cross_entropy, 6),
        "perplexity": finite_perplexity(cross_entropy),
        "oov_rate": round(oov / counted, 6),
    }


def evaluate_gap_file(lm: LanguageModel, sentences: list[list[str]]) -> dict[str, Any]:
    """The gap-filling version: every word predicted from both sides of it; ``</s>`` not counted."""
    ids = [lm.vocab.encode(s) for s in sentences]
    cross_entropy, tokens = evaluate_gaps(lm.net, ids)  # type: ignore[arg-type]
    oov = sum(token not in lm.vocab for s in sentences for token in s)
    return {
        "tokens": tokens,
        "cross_entropy": round(cross_entropy, 6),
        "perplexity": finite_perplexity(cross_entropy),
        "oov_rate": round(oov / max(tokens, 1), 6),
        "task": "gap-filling",
    }


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
