"""nextword as the language model of flashlight-text's beam-search decoders (``LexiconDecoder``;
what torchaudio's ``ctc_decoder`` wraps).

    from flashlight.lib.text.decoder import LexiconDecoder, ...
    from model import load_checkpoint
    from model.adapters.flashlight_lm import flashlight_lm

    words = [...]  # the lexicon's words: word k is usr_token_idx k in the trie
    lm = flashlight_lm(load_checkpoint("runs/ptb"), words)
    decoder = LexiconDecoder(options, trie, lm, sil, blank, unk_word, [], False)

flashlight asks ``start``, ``score(state, word index)`` for each word a beam completes, and
``finish(state)`` at the end of the utterance. The answers are natural-log probabilities under
the model (``log P(word | <s> words so far)``; ``finish``: ``log P(</s> | …)``); the decoder
applies its own ``lm_weight`` and ``word_score``, as it does with its KenLM model. A lexicon word
outside the model's vocabulary is scored as ``<unk>`` shared out by its spelling when the model
has an open vocabulary (``nextword train`` builds one; over HTTP, the service's default), else
as ``<unk>``'s whole probability; plus ``oov_penalty`` (natural log, 0 by default).

flashlight identifies a history by an ``LMState`` object: ``state.child(k)`` is the same object
each time it is asked, so the adapter keeps, per state, the words read and the score that led
to it. The map is emptied at each ``start`` (a new utterance), which bounds its memory.
``lm.use_history(text)`` before an utterance has the model read the text before it (the
service's ``history``: the previous utterances of a call or a page). In
process, the model's prefix cache makes a ``score`` one network step; ``flashlight_lm`` also
takes a ``Scorer`` (``model.adapters.scoring.http_scorer``) to ask a running service instead,
with ``tokenize=served_tokenizer(client)`` so lexicon words are cut as the service cuts text.

flashlight-text is not a dependency of nextword: ``pip install flashlight-text`` (0.0.7, no torch
needed).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from model.adapters.scoring import Scorer, in_process_scorer
from model.inference.bias import DEFAULT_WEIGHT
from model.inference.history import HistoryText
from model.inference.language_model import LanguageModel


@functools.cache
def _adapter_class() -> type:
    """The ``flashlight...LM`` subclass, made on first use: flashlight's base class must exist."""
    from flashlight.lib.text.decoder import LM, LMState

    class NextwordFlashlightLM(LM):  # type: ignore[misc]
        """A flashlight ``LM`` answering from a nextword ``Scorer``."""

        def __init__(self, scorer: Scorer, words: Sequence[list[str]], oov_penalty: float) -> None:
            LM.__init__(self)
            self.scorer, self.words, self.oov_penalty = scorer, list(words), oov_penalty
            self.end = len(self.words)  # the child index of the state after </s>
            self.histories: dict[Any, tuple[str, ...]] = {}  # LMState → words read
            self.scores: dict[Any, float] = {}  # LMState → the score of its last step
            self.calls = 0  # questions sent to the scorer (for measuring)

        def use_history(self, history: HistoryText | None) -> None:
            """Read ``history`` (the text before this utterance: a string, sentences or token
            lists, as the service's ``history``) before each utterance from now on."""
            self.scorer.use_history(history)

        def use_bias(self, phrases: Sequence[str] | None, weight: float = DEFAULT_WEIGHT) -> None:
            """Expect ``phrases`` (the service's ``bias``) in the next utterances."""
            self.scorer.use_bias(phrases, weight)

        def start(self, start_with_nothing: bool) -> Any:
            self.histories.clear()
            self.scores.clear()
            state = LMState()
            self.histories[state] = ()
            return state

        def _step(self, state: Any, index: int, tokens: list[str]) -> tuple[Any, float]:
            child = state.child(index)
            if child not in self.scores:
                self.histories[child] = (*self.histories[state], *tokens)
                if not tokens:  # a lexicon entry with no tokens (only punctuation): no step
                    self.scores[child] = 0.0
                    return child, 0.0
                self.calls += 1
                ((log_prob, oov),) = self.scorer(list(self.histories[state]), [tokens])
                self.scores[child] = log_prob + (self.oov_penalty if oov else 0.0)
            return child, self.scores[child]

        def score(self, state: Any, usr_token_idx: int) -> tuple[Any, float]:
            if not 0 <= usr_token_idx < len(self.words):
                words = len(self.words)
                raise IndexError(f"word index {usr_token_idx} is outside the {words} words")
            return self._step(state, usr_token_idx, self.words[usr_token_idx])

        def finish(self, state: Any) -> tuple[Any, float]:
            return self._step(state, self.end, ["</s>"])

    return NextwordFlashlightLM


def flashlight_lm(
    source: LanguageModel | Scorer,
    words: Sequence[str],
    oov_penalty: float = 0.0,
    tokenize: Callable[[str], list[str]] | None = None,
) -> Any:
    """A flashlight-text ``LM`` over a loaded model (prefix cache turned on) or a ``Scorer``;
    ``words[k]`` is the word whose trie label is k. Each lexicon word is cut into the model's
    tokens once, by ``tokenize``: by default a loaded model's own tokenizer (its normalisation
    included: ``CAT`` is ``cat`` to a spoken-form model); for a ``Scorer`` pass the served
    model's, ``served_tokenizer(client)`` (without one, each word is one token, as written)."""
    scorer: Scorer
    if isinstance(source, LanguageModel):
        scorer, cut = in_process_scorer(source), tokenize or source.tokenize
    else:
        scorer, cut = source, tokenize or (lambda word: [word])
    return _adapter_class()(scorer, [cut(w) for w in words], float(oov_penalty))
