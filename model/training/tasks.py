"""What to train: the next word (``RNNLM``) or the word in a gap (``BiRNNLM``, ``--bidirectional``).

The trainer and the resume checks call a ``TrainingTask`` and never ask which network they hold:
the task builds the network, lays an epoch out as updates, validates, and says whether a hidden
state is carried from one update to the next. ``task_for`` is the one place that reads the
choice from the configuration.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from model.inference.evaluation import (
    gap_cross_entropy,
    isolated_cross_entropy,
    stream_cross_entropy,
)
from model.inference.start_state import mean_boundary_state
from model.network.bidirectional import BiRNNLM, SentenceBatch, sentence_batches
from model.network.recurrent import RNNLM, ModelConfig
from model.text.batches import (
    PaddedSentences,
    bptt_windows,
    padded_segment_batches,
    segments,
    target_mask,
)
from model.training.config import TrainConfig
from model.training.steps import StepResult, gap_train_step, train_step

if TYPE_CHECKING:  # the run's state and corpus; snapshot.py asks this module for the task
    from model.training.snapshot import Corpus, RunState

Step = Callable[[], StepResult]


class TrainingTask(ABC):
    name: ClassVar[str]  # the servable model's task, stored in the checkpoint's metadata
    carries_state: ClassVar[bool]  # the hidden state runs on from one update to the next
    reads_whole_sentences: ClassVar[bool] = True  # an update backpropagates a whole sentence
    perplexity_label: ClassVar[str]  # how the log names its perplexities

    @abstractmethod
    def new_network(self, config: ModelConfig, seed: int) -> RNNLM | BiRNNLM: ...

    @abstractmethod
    def epoch_steps(self, state: RunState, cfg: TrainConfig, corpus: Corpus) -> list[Step]:
        """The epoch's updates, in order; the same list every time, so a resumed run skips to
        its step."""

    @abstractmethod
    def updates_per_epoch(self, cfg: TrainConfig, corpus: Corpus) -> int: ...

    @abstractmethod
    def validate(self, state: RunState, corpus: Corpus) -> dict[str, float]:
        """Validation cross-entropies, nats per predicted token, by name; the first is the one
        the best model is chosen on. A next-word model has "stream" and "isolated" (each
        sentence on its own from the start state, as the service reads text)."""


class NextWord(TrainingTask):
    """Truncated-BPTT windows over the stream, carrying the hidden state between them."""

    name, carries_state, perplexity_label = "next-word", True, "ppl"
    reads_whole_sentences = False  # windows of the stream
    warm_start: ClassVar[bool] = True  # sentences alone start from the mean boundary state

    def new_network(self, config: ModelConfig, seed: int) -> RNNLM:
        return RNNLM(config, seed=seed)

    def epoch_steps(self, state: RunState, cfg: TrainConfig, corpus: Corpus) -> list[Step]:
        net, optimizer, cap = state.net, state.optimizer, state.cap
        assert isinstance(net, RNNLM)  # new_network built it
        rng = state.rng if cfg.dropout > 0 else None
        if state.carry is None:
            state.carry = net.init_state(corpus.train.shape[1])

        def window(inputs: np.ndarray, targets: np.ndarray) -> StepResult:
            mask = target_mask(targets, corpus.vocab)
            assert state.carry is not None  # set above; each window replaces it
            result, state.carry = train_step(
                net, optimizer, inputs, targets, mask, state.carry, cfg.clip, rng
            )
            if cap is not None:
                cap.apply(net.params)
            return result

        return [partial(window, x, y) for x, y in bptt_windows(corpus.train, cfg.bptt)]

    def updates_per_epoch(self, cfg: TrainConfig, corpus: Corpus) -> int:
        return math.ceil((len(corpus.train) - 1) / cfg.bptt)

    def validate(self, state: RunState, corpus: Corpus) -> dict[str, float]:
        """Also sets the network's start state for this epoch's parameters (saved with it)."""
        assert isinstance(state.net, RNNLM)
        state.net.start = (
            mean_boundary_state(state.net, corpus.train_sentences, corpus.vocab)
            if self.warm_start
            else None
        )
        return {
            "stream": stream_cross_entropy(state.net, corpus.valid, corpus.vocab)[0],
            "isolated": isolated_cross_entropy(state.net, corpus.valid_sentences, corpus.vocab)[0],
        }


class NextWordSentences(NextWord):
    """Whole sentences in shuffled batches (seeded with (seed, epoch)), each from a zero state:
    training sees text as the service scores it, and the best model is chosen on that figure.

    With ``reset_prob`` below 1 a sentence continues the one before it in the same sequence
    (state carried) with probability 1 − reset_prob: the model learns both to start from
    nothing and to use the previous sentence. The grouping is drawn once per run (seeded with
    the run's seed), so every epoch has the same number of updates.
    """

    carries_state = False
    reads_whole_sentences = True
    warm_start = False  # it learnt to start sentences from zero

    def epoch_steps(self, state: RunState, cfg: TrainConfig, corpus: Corpus) -> list[Step]:
        net, optimizer, cap = state.net, state.optimizer, state.cap
        assert isinstance(net, RNNLM)  # new_network built it
        rng = state.rng if cfg.dropout > 0 else None
        order = np.random.default_rng([cfg.seed, state.epoch])

        def batch_step(batch: PaddedSentences) -> StepResult:
            zero = net.init_state(batch.inputs.shape[1])
            result, _ = train_step(
                net, optimizer, batch.inputs, batch.targets, batch.mask, zero, cfg.clip, rng
            )
            if cap is not None:
                cap.apply(net.params)
            return result

        units = self.units(cfg, corpus)
        batches = padded_segment_batches(units, cfg.sequences, order, corpus.vocab)
        return [partial(batch_step, b) for b in batches]

    def units(self, cfg: TrainConfig, corpus: Corpus) -> list[list[np.ndarray]]:
        return segments(corpus.train_sentences, cfg.reset_prob, np.random.default_rng(cfg.seed))

    def updates_per_epoch(self, cfg: TrainConfig, corpus: Corpus) -> int:
        return math.ceil(len(self.units(cfg, corpus)) / cfg.sequences)

    def validate(self, state: RunState, corpus: Corpus) -> dict[str, float]:
        figures = super().validate(state, corpus)
        return {"isolated": figures["isolated"], "stream": figures["stream"]}


class GapFilling(TrainingTask):
    """Batches of whole sentences, shuffled by a generator seeded with (seed, epoch)."""

    name, carries_state, perplexity_label = "gap-filling", False, "gap-filling ppl"

    def new_network(self, config: ModelConfig, seed: int) -> BiRNNLM:
        return BiRNNLM(config, seed=seed)

    def epoch_steps(self, state: RunState, cfg: TrainConfig, corpus: Corpus) -> list[Step]:
        net, optimizer, cap = state.net, state.optimizer, state.cap
        assert isinstance(net, BiRNNLM)  # new_network built it
        rng = state.rng if cfg.dropout > 0 else None
        order = np.random.default_rng([cfg.seed, state.epoch])
        bos, eos = corpus.vocab.bos_id, corpus.vocab.eos_id

        def batch_step(batch: SentenceBatch) -> StepResult:
            result = gap_train_step(net, optimizer, batch, cfg.clip, rng)
            if cap is not None:
                cap.apply(net.params)
            return result

        batches = sentence_batches(corpus.train_sentences, cfg.sequences, order, bos, eos)
        return [partial(batch_step, b) for b in batches]

    def updates_per_epoch(self, cfg: TrainConfig, corpus: Corpus) -> int:
        bos, eos = corpus.vocab.bos_id, corpus.vocab.eos_id
        order = np.random.default_rng(0)  # the count does not depend on the order
        return sum(
            1 for _ in sentence_batches(corpus.train_sentences, cfg.sequences, order, bos, eos)
        )

    def validate(self, state: RunState, corpus: Corpus) -> dict[str, float]:
        assert isinstance(state.net, BiRNNLM)
        return {"gap": gap_cross_entropy(state.net, corpus.valid_sentences)[0]}


def task_for(cfg: TrainConfig) -> TrainingTask:
    """The task ``cfg`` trains: gap filling with ``bidirectional``, else the next word, from
    the running stream or from whole sentences (``context``)."""
    if cfg.bidirectional:
        return GapFilling()
    return NextWordSentences() if cfg.context == "sentence" else NextWord()
