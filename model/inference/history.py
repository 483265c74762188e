"""What was said before a request: the running text a stream-trained model reads first.

A recurrent model trained on running text (``<s> s₁ </s> <s> s₂ </s> …`` with the state carried
on) predicts a sentence better after the sentences before it than from a cold start; the
service lets a caller send them as ``history``. This module turns that history into the tokens a
model reads before a request's own ``<s>``, within a bound on how many.

The bound drops the oldest tokens, and it drops them in steps of half the bound (each cut moved
on to the next sentence start): a client sending a growing document, sentence after sentence,
then keeps the same window start for many calls, so the model's prefix cache still holds the
state after the window's earlier sentences and each call reads about one new sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from model.text.corpus import split_text
from model.text.vocab import BOS, EOS

# what a caller may send: a string (cut into sentences), sentences, or token lists
HistoryText = str | Sequence[str] | Sequence[Sequence[str]]
MAX_HISTORY_TOKENS = 2048  # the default bound (the service's NEXTWORD_MAX_HISTORY_TOKENS)


@dataclass(frozen=True)
class History:
    """The history a model reads: ``tokens`` come after a ``<s>`` the model adds itself (``h₁
    </s> <s> h₂ </s>`` for two sentences), so the next ``<s>`` starts the request's sentence."""

    tokens: list[str]
    sentences: int  # sentences of the history read, whole or in part
    read: int  # tokens the model reads: <s> and the tokens (0 without any)
    dropped: int  # the oldest tokens of the stream left out (over the bound)

    @classmethod
    def empty(cls) -> History:
        return cls([], 0, 0, 0)

    def before(self, context: Sequence[str]) -> list[str]:
        """``context`` after this history, as a next-word call reads it: ``h … </s> <s>
        context`` (``split_context`` undoes it)."""
        return [*self.tokens, BOS, *context] if self.tokens else list(context)


def history_window(sentences: Sequence[Sequence[str]], max_tokens: int) -> History:
    """The stream ``<s> s₁ </s> <s> s₂ </s> …`` of the non-empty ``sentences``, its oldest tokens
    dropped so that at most ``max_tokens`` remain. The cut falls on a multiple of half the bound,
    counted from the stream's start, moved on to the next ``<s>`` when there is one (a sentence
    is then read whole or not at all; otherwise the model reads ``<s>`` and the rest of the last
    sentence); a growing history keeps the same cut until it grows by another half bound."""
    stream: list[str] = []
    starts: list[int] = []  # where each sentence's <s> is
    for sentence in sentences:
        if sentence:
            starts.append(len(stream))
            stream += [BOS, *sentence, EOS]
    ends = [*starts[1:], len(stream)]
    cut = 0
    if len(stream) > max_tokens:
        step = max(1, max_tokens // 2)
        cut = math.ceil((len(stream) - max_tokens) / step) * step
        cut = next((s for s in starts if s >= cut), cut)
    if cut < len(stream) and stream[cut] != BOS:  # mid-sentence: the model reads <s> first
        cut += len(stream) - cut + 1 > max_tokens  # and that <s> counts
        if stream[cut:] == [EOS]:  # nothing of the sentence is left
            cut = len(stream)
    kept = stream[cut:]
    tokens = kept[1:] if kept[:1] == [BOS] else kept
    read = len(tokens) + 1 if tokens else 0  # <s> and tokens
    return History(tokens, sum(end > cut for end in ends), read, cut)


def history_sentences(given: HistoryText, tokenize: Callable[[str], list[str]]) -> list[list[str]]:
    """The sentences of a history as tokens: a string is cut into sentences (at . ! ? 。！？
    and blank lines, ``split_text``) and each tokenised, a list of strings is a list of
    sentences, each tokenised; a list of token lists is taken as it is."""
    texts = split_text(given, "sentences") if isinstance(given, str) else given
    return [tokenize(t) if isinstance(t, str) else [str(w) for w in t] for t in texts]


def split_context(tokens: list[str]) -> tuple[list[str], list[str]]:
    """A context ``h … </s> <s> sentence`` as (the history's tokens, the sentence's); without
    a ``<s>`` in it, no history."""
    if BOS not in tokens:
        return [], tokens
    last = len(tokens) - 1 - tokens[::-1].index(BOS)
    return tokens[:last], tokens[last + 1 :]
