"""What a training run is made of, and how it is saved and restored.

- ``Corpus``: the tokenised, batched training and validation text, and where it came from.
- ``RunState``: everything that changes while training: weights, optimiser, hidden state carried
  between windows, dropout generator, position in the epoch, history.

``save_state`` writes a ``RunState`` into ``OUT/resume`` as a checkpoint of its own (atomic: the
previous snapshot stays valid until the new one is complete); ``load_state`` restores it exactly,
so a resumed run continues as if it had never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.bidirectional import BiRNNLM
from model.checkpoint import load_checkpoint, load_tensors, read_config, save_checkpoint
from model.corpus import CorpusError, file_sha256, load_sentences
from model.data import batchify, sentence_stream, target_mask
from model.network import RNNLM, NetworkState
from model.optim import SGD, Adam, make_optimizer
from model.scoring import LanguageModel
from model.tokenize import Tokenizer
from model.train_config import RESUMABLE_CHANGES, TrainConfig
from model.vocab import Vocabulary

RESUME_DIR = "resume"


class TrainingError(RuntimeError):
    """The run cannot start or go on; the message says why and what to do."""


class StoppedError(TrainingError):
    """SIGINT or SIGTERM stopped the run after saving it; ``--resume`` continues it."""


@dataclass
class Corpus:
    tokenizer: Tokenizer
    vocab: Vocabulary
    train: np.ndarray  # (T_total, batch_size) ids
    valid: np.ndarray  # (T_total, eval batch) ids
    info: dict[str, Any]  # paths, checksums and token counts, stored in the checkpoint
    train_sentences: list[np.ndarray]  # ids of each sentence (the gap-filling model's unit)
    valid_sentences: list[np.ndarray]


def prepare_corpus(cfg: TrainConfig) -> Corpus:
    """Read, split and tokenise the corpora, build the vocabulary from train only, and batch."""
    tokenizer = Tokenizer(cfg.tokenizer, cfg.lowercase)
    assert cfg.train is not None
    train = load_sentences(cfg.train, tokenizer, cfg.split)
    if cfg.valid:
        valid = load_sentences(cfg.valid, tokenizer, cfg.split)
    else:  # hold out the last sentences: text order is kept, nothing from valid leaks into train
        cut = round(len(train) * (1 - cfg.valid_fraction))
        if not 0 < cut < len(train):
            raise CorpusError(
                f"{cfg.train}: {len(train)} sentences are too few to hold out a validation set"
            )
        train, valid = train[:cut], train[cut:]
    vocab = Vocabulary.from_corpus(train, min_count=cfg.min_count, max_size=cfg.max_vocab)
    words = len(vocab) - 3
    if words < 3:
        raise CorpusError(
            f"{cfg.train}: the vocabulary has {words} words (min_count {cfg.min_count}); need 3"
        )
    train_stream = sentence_stream(train, vocab)
    if len(train_stream) < cfg.batch_size * (cfg.bptt + 1):
        need = cfg.batch_size * (cfg.bptt + 1)
        raise CorpusError(
            f"{cfg.train}: {len(train_stream)} tokens, fewer than one batch "
            f"(batch_size × (bptt + 1) = {need}); use a smaller --batch-size or --bptt"
        )
    valid_stream = sentence_stream(valid, vocab)
    info = {
        "train": cfg.train,
        "train_sha256": file_sha256(cfg.train),
        "train_sentences": len(train),
        "train_tokens": int(target_mask(train_stream[1:], vocab).sum()),
        "valid": cfg.valid or f"last {cfg.valid_fraction:.0%} of train",
        "valid_sha256": file_sha256(cfg.valid) if cfg.valid else None,
        "valid_tokens": int(target_mask(valid_stream[1:], vocab).sum()),
    }
    eval_batch = max(1, min(cfg.eval_batch_size, len(valid_stream) // 2))
    return Corpus(
        tokenizer,
        vocab,
        batchify(train_stream, cfg.batch_size),
        batchify(valid_stream, eval_batch),
        info,
        [vocab.encode(s) for s in train],
        [vocab.encode(s) for s in valid],
    )


@dataclass
class RunState:
    """Everything that changes during a run; saved in ``resume/``."""

    net: RNNLM | BiRNNLM
    optimizer: SGD | Adam
    rng: np.random.Generator  # dropout masks
    carry: NetworkState | None = None  # hidden state carried into the next window
    epoch: int = 0  # finished epochs
    step: int = 0  # windows done in the current epoch
    loss_sum: float = 0.0  # token-weighted training loss so far in the current epoch
    tokens: int = 0  # counted training tokens so far in the current epoch
    best_valid: float = math.inf  # best validation cross-entropy
    bad_epochs: int = 0  # epochs since the last improvement
    elapsed: float = 0.0  # training seconds, across restarts
    history: list[dict[str, Any]] = field(default_factory=list)

    SCALARS = (
        "epoch",
        "step",
        "loss_sum",
        "tokens",
        "best_valid",
        "bad_epochs",
        "elapsed",
        "history",
    )


def new_state(cfg: TrainConfig, corpus: Corpus) -> RunState:
    config = cfg.model_config(len(corpus.vocab))
    net = (BiRNNLM if cfg.bidirectional else RNNLM)(config, seed=cfg.seed)
    return RunState(
        net, make_optimizer(cfg.optimizer, cfg.learning_rate), np.random.default_rng(cfg.seed + 1)
    )


def save_state(
    out: Path, state: RunState, cfg: TrainConfig, corpus: Corpus, started: float
) -> None:
    """Snapshot the run into ``out/resume``; atomic, the old snapshot stays until replaced."""
    state.elapsed += time.perf_counter() - started
    carry = {}
    for layer, tensors in enumerate(state.carry or []):
        carry.update({f"{layer}.{k}": t for k, t in enumerate(tensors)})
    metadata = {
        "resume": {name: getattr(state, name) for name in RunState.SCALARS}
        | {"rng": state.rng.bit_generator.state, "optimizer": cfg.optimizer},
        "training": cfg.to_dict(),
        "corpus": corpus.info,
    }
    lm = LanguageModel(state.net, corpus.vocab, corpus.tokenizer)
    save_checkpoint(
        out / RESUME_DIR, lm, metadata, {"optimizer": state.optimizer.state_dict(), "carry": carry}
    )


def resumed_config(out: Path, given: dict[str, Any]) -> TrainConfig:
    """The saved run's configuration, with the options that may change on resume applied."""
    saved = read_config(out / RESUME_DIR)["metadata"]["training"]
    changed = sorted(
        k for k, v in given.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v
    )
    if changed:
        raise TrainingError(
            f"--resume continues the saved run; these options differ from it: {changed}"
        )
    return TrainConfig.from_dict(saved | {k: given[k] for k in RESUMABLE_CHANGES if k in given})


def load_state(out: Path, cfg: TrainConfig, corpus: Corpus) -> RunState:
    """The run saved in ``out/resume``, checked against the data of this call."""
    lm = load_checkpoint(out / RESUME_DIR)
    for key in ("train_sha256", "valid_sha256"):
        if lm.metadata["corpus"][key] != corpus.info[key]:
            raise TrainingError(
                f"{corpus.info[key[:5]]}: the file changed since the run started; cannot resume"
            )
    if lm.vocab.tokens != corpus.vocab.tokens:
        raise TrainingError(
            "the vocabulary built from the corpus differs from the saved run; cannot resume"
        )
    resume = lm.metadata["resume"]
    optimizer = make_optimizer(cfg.optimizer, cfg.learning_rate)
    optimizer.load_state_dict(load_tensors(out / RESUME_DIR, "optimizer"))
    rng = np.random.default_rng()
    rng.bit_generator.state = resume["rng"]
    state = RunState(lm.net, optimizer, rng, **{k: resume[k] for k in RunState.SCALARS})
    carry = load_tensors(out / RESUME_DIR, "carry")
    if carry:
        n = lm.net.cell.num_states
        state.carry = [
            tuple(carry[f"{layer}.{k}"] for k in range(n)) for layer in range(cfg.layers)
        ]
    return state
