"""nextword as the language model of pyctcdecode's CTC beam search (shallow fusion).

    from pyctcdecode import Alphabet, BeamSearchDecoderCTC
    from model import load_checkpoint
    from model.adapters.pyctcdecode_lm import NextwordCTCLM

    lm = NextwordCTCLM.in_process(load_checkpoint("runs/ptb"), alpha=0.5, beta=1.0)
    decoder = BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), lm)
    text = decoder.decode(log_probs)  # (frames, labels) log-softmax of an acoustic/OCR model

pyctcdecode asks its language model for ``score(state, word, is_last_word)`` once per word a
beam completes (it caches the answer by the text so far) and for ``score_partial_token`` for a
word still being spelt. This class answers both the way pyctcdecode's own KenLM model does, with
the same parameters: the score of a word is ``alpha · (log P(word | text so far) + oov) + beta``
(natural log, ``<s>`` first, ``</s>`` added after the last word when ``score_boundary``), where
``oov`` is ``unk_score_offset`` (log10 units, as pyctcdecode's: −10 by default) times ln 10 for a
word outside the vocabulary; a partial word that no vocabulary word starts with gets
``unk_score_offset`` (scaled up past 6 characters), as pyctcdecode does. A model with an open
vocabulary (``/v1/models``: ``open_vocabulary``; ``nextword train`` builds one) prices a whole
OOV word itself, by its spelling, so ``oov`` is 0 for it and the offset applies to partial words
only (``open_vocabulary=False`` restores the offset).

``tokenize`` turns a decoded word into the model's tokens: by default the model's own tokenizer
in process and whitespace over HTTP; ``tokenize=treebank_split`` (``model.adapters.spelling``)
for a model that reads clitics as tokens (Penn Treebank text: ``daewoo 's``). A partial word is
then fine when its tokens but the last are words and the last starts one.

``lm.use_history(text)`` has the model read the text before the utterance (the service's
``history``: the previous utterances of a call, the lines above on a page) first.

The state is the tokens read so far. In process, the model's prefix cache (turned on here when
it has none) holds the network state after each of them, so a ``score`` call reads one new word:
one network step and one output row. ``NextwordCTCLM.http`` sends the same question to a running
service (``/v1/candidates``) instead. pyctcdecode is not a dependency of nextword: install it with
``pip install --no-deps pyctcdecode==0.5.0 pygtrie`` (its numpy<2 pin is stale; it runs on numpy 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from model.adapters.scoring import (
    Scorer,
    http_scorer,
    in_process_scorer,
    served_model,
    served_tokenizer,
    unigrams_of,
)
from model.inference.bias import DEFAULT_WEIGHT
from model.inference.history import HistoryText
from model.inference.language_model import LanguageModel
from model.text.vocab import SPECIALS

__all__ = ["NextwordCTCLM", "unigrams_of"]

LN10 = math.log(10.0)
AVG_TOKEN_LEN = 6  # pyctcdecode's: a partial word longer than this is penalised more
NO_HISTORY_LIMIT = 1_000_000  # ``order`` for pyctcdecode's history pruning: a recurrent model
# reads the whole text, so beams that differ anywhere must not be merged

State = tuple[str, ...]  # the tokens read so far (after <s>)
Tokenize = Callable[[str], list[str]]  # a decoded word → the model's tokens


class NextwordCTCLM:
    """A pyctcdecode ``AbstractLanguageModel`` (duck-typed: pyctcdecode need not be installed to
    build one) backed by a nextword model, in process or over HTTP."""

    def __init__(
        self,
        scorer: Scorer,
        tokenize: Tokenize,
        unigrams: Iterable[str],
        alpha: float = 0.5,
        beta: float = 1.5,
        unk_score_offset: float = -10.0,
        score_boundary: bool = True,
        open_vocabulary: bool = False,
    ) -> None:
        """``scorer`` answers candidates queries, ``tokenize`` splits a decoded word as the
        model does, ``unigrams`` are the words a partial word may grow into;
        ``open_vocabulary``: the scorer already prices a whole OOV word (by its spelling), so
        ``unk_score_offset`` applies to partial words only."""
        self._scorer, self._tokenize = scorer, tokenize
        self.open_vocabulary = open_vocabulary
        self._words = {w for w in unigrams if w not in SPECIALS}
        self._prefixes = {w[:i] for w in self._words for i in range(1, len(w) + 1)}
        self._bias_prefixes: set[str] = set()  # the bias's words as spelt, and their beginnings
        self.alpha, self.beta = 0.0, 0.0
        self.unk_score_offset, self.score_boundary = 0.0, True
        self.reset_params(alpha=alpha, beta=beta, unk_score_offset=unk_score_offset,
                          score_boundary=score_boundary)  # fmt: skip
        self.calls = 0  # score calls answered (for measuring)

    @classmethod
    def in_process(
        cls, lm: LanguageModel, tokenize: Tokenize | None = None, **params: Any
    ) -> NextwordCTCLM:
        """Backed by a loaded model (a recurrent one gets a prefix cache if it has none);
        ``tokenize`` defaults to the model's own."""
        spelled = params.setdefault("open_vocabulary", lm.spelling is not None)
        scorer = in_process_scorer(lm, spelled=spelled)
        return cls(scorer, tokenize or lm.tokenize, lm.vocab.tokens, **params)

    @classmethod
    def http(
        cls, client: Any, unigrams: Iterable[str], tokenize: Tokenize | None = None, **params: Any
    ) -> NextwordCTCLM:
        """Backed by a running service through ``app.client.NextwordClient`` (or anything with
        its ``candidates`` and ``models`` methods; the client names the model). ``unigrams``:
        the model's words (a service does not list its vocabulary), e.g. ``unigrams_of`` the
        same checkpoint. Tokens are sent as lists, as ``tokenize`` cut them: by default the
        served model's own tokenizer and normalisation (``served_tokenizer``)."""
        if "open_vocabulary" not in params:
            params["open_vocabulary"] = served_model(client).open_vocabulary is not None
        scorer = http_scorer(client, oov=None if params["open_vocabulary"] else "unk")
        return cls(scorer, tokenize or served_tokenizer(client), unigrams, **params)

    def use_history(self, history: HistoryText | None) -> None:
        """Read ``history`` (the text before the next utterances: a string, sentences or token
        lists, as the service's ``history``) before each beam's words from now on; None: each
        utterance is a sentence alone. (pyctcdecode keeps its score cache per ``decode`` call,
        so the next call sees the new history.)"""
        self._scorer.use_history(history)

    def use_bias(self, phrases: Sequence[str] | None, weight: float = DEFAULT_WEIGHT) -> None:
        """Expect ``phrases`` (names, terms; the service's ``bias``) in the next utterances,
        with the model's own normalised probabilities (not a score bonus, as pyctcdecode's
        ``hotwords`` are); None: no bias. A partial word that can still become one of the
        phrases' words is not penalised as unknown (``score_partial_token``), so the beam keeps
        a name outside the vocabulary alive until it is whole and the model can price it."""
        self._scorer.use_bias(phrases, weight)
        words = {w for p in phrases or () for w in p.split()}
        self._bias_prefixes = {w[:i] for w in words for i in range(1, len(w) + 1)}

    # ------------------------------------------------------------ pyctcdecode's interface
    @property
    def order(self) -> int:
        return NO_HISTORY_LIMIT

    def get_start_state(self) -> State:
        return ()

    def reset_params(self, **params: Any) -> None:
        """alpha, beta, unk_score_offset (numbers) and score_boundary (a bool), as pyctcdecode
        sets them (``decoder.reset_params``); ValueError naming a bad one."""
        for name in ("alpha", "beta", "unk_score_offset"):
            value = params.get(name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        boundary = params.get("score_boundary")
        if boundary is not None:
            if not isinstance(boundary, bool):
                raise ValueError(f"score_boundary must be a bool, got {boundary!r}")
            self.score_boundary = boundary

    def score_partial_token(self, partial_token: str) -> float:
        """0 while ``partial_token`` can still become words of the vocabulary (its tokens but
        the last are words, and some word starts with the last) or a word of the bias's
        phrases, else the OOV offset."""
        if partial_token in self._prefixes or partial_token in self._bias_prefixes:
            return 0.0
        # as the model cuts it: "daewoo'" → daewoo + "'", "CA" → "ca" for a spoken-form model
        *done, last = self._tokenize(partial_token) or [""]
        if last in self._prefixes and all(t in self._words for t in done):
            return 0.0
        penalty = self.unk_score_offset
        if len(partial_token) > AVG_TOKEN_LEN:
            penalty *= len(partial_token) / AVG_TOKEN_LEN
        return penalty

    def score(
        self, prev_state: State, word: str, is_last_word: bool = False
    ) -> tuple[float, State]:
        """(fusion score of ``word`` after the text of ``prev_state``, the new state). An empty
        word (the end of a beam with no partial word) scores ``</s>`` only, with no bonus."""
        self.calls += 1
        tokens = self._tokenize(word) if word else []
        end = is_last_word and self.score_boundary
        if not tokens and not end:
            return 0.0, prev_state
        ((log_prob, oov),) = self._scorer(list(prev_state), [tokens + (["</s>"] if end else [])])
        offset = 0.0 if self.open_vocabulary or not oov else self.unk_score_offset * LN10
        raw = log_prob + offset
        return self.alpha * raw + (self.beta if tokens else 0.0), prev_state + tuple(tokens)

    def save_to_dir(self, filepath: str) -> None:
        raise NotImplementedError(
            "a nextword model is saved as a checkpoint directory; build the adapter again from it"
        )
