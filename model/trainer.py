"""The training run: corpus → vocabulary → epochs of truncated BPTT → the best checkpoint.

Files in the output directory:

    config.json, vocab.*.json, weights.*.safetensors   the best model so far (by validation)
    metrics.jsonl                                      one JSON line per finished epoch
    training.png                                       perplexity and learning rate per epoch
    resume/                                            the latest state, while the run is going

``resume/`` is a checkpoint of its own: the current weights, the optimiser state, the hidden state
carried between windows, the dropout generator, the position in the epoch and the history. It is
rewritten atomically every ``checkpoint_every`` windows and at the end of every epoch, so a run
killed at any moment loses at most that much work, and ``--resume`` continues exactly where the
snapshot left off: the result is the same as that of a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import model
from model.bidirectional import BiRNNLM, sentence_batches
from model.checkpoint import (
    CONFIG_FILE,
    load_checkpoint,
    load_tensors,
    read_config,
    save_checkpoint,
    write_atomic,
)
from model.corpus import CorpusError, file_sha256, load_sentences
from model.data import batchify, bptt_windows, sentence_stream, target_mask
from model.evaluate import evaluate_file
from model.network import RNNLM, NetworkState
from model.optim import SGD, Adam, make_optimizer
from model.plot import plot_history
from model.scoring import LanguageModel
from model.tokenize import Tokenizer
from model.train_config import RESUMABLE_CHANGES, TrainConfig
from model.training import (
    StepResult,
    evaluate,
    evaluate_gaps,
    gap_train_step,
    perplexity,
    train_step,
)
from model.vocab import Vocabulary

RESUME_DIR = "resume"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class TrainingError(RuntimeError):
    """The run cannot start or go on; the message says why and what to do."""


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


def check_output_dir(out: Path, resume: bool, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out}: exists and is not a directory")
    if resume:
        if not (out / RESUME_DIR / CONFIG_FILE).exists():
            raise TrainingError(f"{out}: no saved run to resume (no {RESUME_DIR}/{CONFIG_FILE})")
    elif (out / CONFIG_FILE).exists() and not force:
        raise TrainingError(
            f"{out}: already holds a model; pass --force to replace it or --resume to continue it"
        )
    elif force:  # a new run: the old model stays until the first epoch replaces it atomically
        shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
        for name in (METRICS_FILE, PLOT_FILE):
            (out / name).unlink(missing_ok=True)


class StopRequest:
    """Set by SIGINT/SIGTERM; the loop saves the run between two windows and stops.

    Stopping between windows, never inside one, keeps the snapshot consistent (a window
    interrupted halfway through its update would leave some weights updated and some not).
    A second Ctrl-C stops at once.
    """

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def request(_signum: int, _frame: object) -> None:
            self.requested = True
            signal.signal(signal.SIGINT, previous[signal.SIGINT])  # a second Ctrl-C is immediate

        for sig in previous:
            signal.signal(sig, request)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_epoch(
    state: RunState,
    cfg: TrainConfig,
    corpus: Corpus,
    snapshot: Callable[[], None],
    stop: StopRequest,
) -> float:
    """Train over the rest of the current epoch; returns its training tokens per second."""
    steps = epoch_steps(state, cfg, corpus)
    start, tokens = time.perf_counter(), 0
    desc = f"epoch {state.epoch + 1}/{cfg.epochs}"
    with tqdm(
        total=len(steps), initial=state.step, desc=desc, unit="step", file=sys.stderr, disable=None
    ) as bar:
        for step in steps[state.step :]:
            result = step()
            state.step += 1
            state.loss_sum += result.loss * result.tokens
            state.tokens += result.tokens
            tokens += result.tokens
            if state.step % 10 == 0 or state.step == len(steps):
                speed = tokens / (time.perf_counter() - start)
                loss = state.loss_sum / state.tokens
                bar.set_postfix_str(
                    f"loss {loss:.3f}  ppl {perplexity(loss):.1f}  {speed:,.0f} tok/s"
                )
            bar.update(1)
            if stop.requested:
                snapshot()
                raise TrainingError("stopped; the run is saved: continue it with --resume")
            if state.step % cfg.checkpoint_every == 0 and state.step < len(steps):
                snapshot()
    return tokens / max(time.perf_counter() - start, 1e-9)


def epoch_steps(
    state: RunState, cfg: TrainConfig, corpus: Corpus
) -> list[Callable[[], StepResult]]:
    """The epoch's updates, in order; the same list every time, so a resumed run skips to its step.

    Left-to-right: truncated-BPTT windows over the stream, carrying the hidden state. Gap-filling:
    batches of whole sentences, shuffled by a generator seeded with (seed, epoch).
    """
    rng = state.rng if cfg.dropout > 0 else None
    net, optimizer = state.net, state.optimizer
    if isinstance(net, BiRNNLM):
        order = np.random.default_rng([cfg.seed, state.epoch])
        bos, eos = corpus.vocab.bos_id, corpus.vocab.eos_id
        batches = sentence_batches(corpus.train_sentences, cfg.batch_size, order, bos, eos)
        return [partial(gap_train_step, net, optimizer, b, cfg.clip, rng) for b in batches]
    if state.carry is None:
        state.carry = net.init_state(corpus.train.shape[1])

    def window(inputs: np.ndarray, targets: np.ndarray) -> StepResult:
        mask = target_mask(targets, corpus.vocab)
        result, state.carry = train_step(
            net, optimizer, inputs, targets, mask, state.carry, cfg.clip, rng
        )
        return result

    return [partial(window, x, y) for x, y in bptt_windows(corpus.train, cfg.bptt)]


def validate(state: RunState, corpus: Corpus) -> float:
    """Validation cross-entropy: next-word, or gap-filling for a bidirectional model."""
    if isinstance(state.net, BiRNNLM):
        return evaluate_gaps(state.net, corpus.valid_sentences)[0]
    return evaluate(state.net, corpus.valid, corpus.vocab)[0]


def end_epoch(state: RunState, cfg: TrainConfig, corpus: Corpus, out: Path, speed: float) -> None:
    """Validate, keep the best model, decay the learning rate on a plateau, record the metrics."""
    valid_ce = validate(state, corpus)
    train_ce = state.loss_sum / max(state.tokens, 1)
    improved = valid_ce < state.best_valid
    record = {
        "epoch": state.epoch + 1,
        "train_loss": round(train_ce, 5),
        "train_ppl": round(perplexity(train_ce), 3),
        "valid_loss": round(valid_ce, 5),
        "valid_ppl": round(perplexity(valid_ce), 3),
        "lr": state.optimizer.lr,
        "tokens_per_s": round(speed),
        "elapsed_s": round(state.elapsed, 1),
        "best": improved,
    }
    if improved:
        state.best_valid, state.bad_epochs = valid_ce, 0
        metadata = {
            "training": cfg.to_dict(),
            "corpus": corpus.info,
            "epoch": state.epoch + 1,
            "train_perplexity": record["train_ppl"],
            "valid_perplexity": record["valid_ppl"],
            "valid_cross_entropy": valid_ce,
            "task": "gap-filling" if cfg.bidirectional else "next-word",
            "nextword_version": model.__version__,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        save_checkpoint(out, LanguageModel(state.net, corpus.vocab, corpus.tokenizer), metadata)
    else:
        state.bad_epochs += 1
        state.optimizer.decay(cfg.lr_decay)
    state.history.append(record)
    write_atomic(out / METRICS_FILE, "".join(_json_line(r) for r in state.history).encode())
    state.epoch, state.step, state.carry, state.loss_sum, state.tokens = (
        state.epoch + 1,
        0,
        None,
        0.0,
        0,
    )
    mark = "  *best" if improved else f"  (no improvement; lr → {state.optimizer.lr:g})"
    kind = "gap-filling " if cfg.bidirectional else ""
    ppl = f"train {kind}ppl {record['train_ppl']:.2f}, valid {kind}ppl {record['valid_ppl']:.2f}"
    log(f"epoch {record['epoch']}: {ppl}, {speed:,.0f} tok/s{mark}")


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def train(
    cfg: TrainConfig, given: dict[str, Any] | None = None, resume: bool = False, force: bool = False
) -> Path:
    """Run (or resume) training as configured; returns the output directory.

    ``given`` holds the options given explicitly; on resume they must match the saved run's.
    """
    if not cfg.out:
        raise TrainingError("an output directory (--out) is needed")
    out = Path(cfg.out)
    check_output_dir(out, resume, force)
    if resume:
        cfg = resumed_config(out, given or {})
    elif not cfg.train:
        raise TrainingError("a training corpus (--train, --config or --preset) is needed")
    corpus = prepare_corpus(cfg)
    state = load_state(out, cfg, corpus) if resume else new_state(cfg, corpus)
    out.mkdir(parents=True, exist_ok=True)
    size = f"{cfg.cell} {cfg.layers}×{cfg.hidden}, {state.net.num_parameters():,} parameters"
    data = f"vocabulary {len(corpus.vocab):,}, {corpus.info['train_tokens']:,} training tokens"
    where = f"; resuming at epoch {state.epoch + 1}, window {state.step}" if resume else ""
    log(f"{size}, {data}{where}")
    if cfg.bidirectional:
        note = "perplexities are of the gap-filling task, P(w | both sides)"
        log(f"bidirectional: {note}; they are not comparable with left-to-right perplexity")
    started = time.perf_counter()

    def snapshot() -> None:
        nonlocal started
        save_state(out, state, cfg, corpus, started)
        started = time.perf_counter()

    with StopRequest().installed() as stop:
        while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
            speed = run_epoch(state, cfg, corpus, snapshot, stop)
            state.elapsed += time.perf_counter() - started
            started = time.perf_counter()
            end_epoch(state, cfg, corpus, out, speed)
            snapshot()
    if state.bad_epochs >= cfg.patience:
        log(f"stopped early: {cfg.patience} epochs without improvement")
    finish(out, cfg, state)
    return out


def finish(out: Path, cfg: TrainConfig, state: RunState) -> None:
    """Score the test set with the best model, draw the plot, and drop the resume snapshot."""
    if cfg.test:
        lm = load_checkpoint(out)
        result = evaluate_file(lm, cfg.test, cfg.split)
        save_checkpoint(out, lm, lm.metadata | {f"test_{k}": v for k, v in result.items()})
        log(
            f"test: perplexity {result['perplexity']:.2f}, {result['tokens']:,} tokens ({cfg.test})"
        )
    if plot_history(state.history, out / PLOT_FILE):
        log(f"plot: {out / PLOT_FILE}")
    else:
        log("plot skipped: matplotlib is not installed (pip install 'nextword[plot]')")
    shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
    log(f"model: {out}")
