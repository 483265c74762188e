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

from model.inference.evaluation import gap_cross_entropy, stream_cross_entropy
from model.network.bidirectional import BiRNNLM, SentenceBatch, sentence_batches
from model.network.recurrent import RNNLM, ModelConfig
from model.text.batches import bptt_windows, target_mask
from model.training.config import TrainConfig
from model.training.steps import StepResult, gap_train_step, train_step

if TYPE_CHECKING:  # the run's state and corpus; snapshot.py asks this module for the task
    from model.training.snapshot import Corpus, RunState

Step = Callable[[], StepResult]


class TrainingTask(ABC):
    name: ClassVar[str]  # the servable model's task, stored in the checkpoint's metadata
    carries_state: ClassVar[bool]  # the hidden state runs on from one update to the next
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
    def validate(self, state: RunState, corpus: Corpus) -> float:
        """Validation cross-entropy, nats per predicted token."""


class NextWord(TrainingTask):
    """Truncated-BPTT windows over the stream, carrying the hidden state between them."""

    name, carries_state, perplexity_label = "next-word", True, "ppl"

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

    def validate(self, state: RunState, corpus: Corpus) -> float:
        assert isinstance(state.net, RNNLM)
        return stream_cross_entropy(state.net, corpus.valid, corpus.vocab)[0]


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

        batches = sentence_batches(corpus.train_sentences, cfg.batch_size, order, bos, eos)
        return [partial(batch_step, b) for b in batches]

    def updates_per_epoch(self, cfg: TrainConfig, corpus: Corpus) -> int:
        bos, eos = corpus.vocab.bos_id, corpus.vocab.eos_id
        order = np.random.default_rng(0)  # the count does not depend on the order
        return sum(
            1 for _ in sentence_batches(corpus.train_sentences, cfg.batch_size, order, bos, eos)
        )

    def validate(self, state: RunState, corpus: Corpus) -> float:
        assert isinstance(state.net, BiRNNLM)
        return gap_cross_entropy(state.net, corpus.valid_sentences)[0]


def task_for(cfg: TrainConfig) -> TrainingTask:
    """The task ``cfg`` trains: gap filling with ``bidirectional``, else the next word."""
    return GapFilling() if cfg.bidirectional else NextWord()
