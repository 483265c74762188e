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
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
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
    save_checkpoint,
    write_atomic,
)
from model.data import bptt_windows, target_mask
from model.evaluate import evaluate_file
from model.plot import plot_history
from model.run_state import (
    RESUME_DIR,
    Corpus,
    RunState,
    StoppedError,
    TrainingError,
    load_state,
    new_state,
    prepare_corpus,
    resumed_config,
    save_state,
)
from model.scoring import LanguageModel
from model.train_config import TrainConfig
from model.training import (
    StepResult,
    evaluate,
    evaluate_gaps,
    gap_train_step,
    perplexity,
    train_step,
)

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


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
                raise StoppedError("stopped; the run is saved: continue it with --resume")
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
    cfg: TrainConfig,
    given: dict[str, Any] | None = None,
    resume: bool = False,
    force: bool = False,
    stop: StopRequest | None = None,
) -> Path:
    """Run (or resume) training as configured; returns the output directory.

    ``given`` holds the options given explicitly; on resume they must match the saved run's.
    ``stop`` (default: one set by SIGINT/SIGTERM) ends the run, saved, after the current window.
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

    with (stop or StopRequest()).installed() as stop:
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
