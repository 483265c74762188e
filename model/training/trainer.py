"""The training run: corpus → vocabulary → epochs of truncated BPTT → the best checkpoint.

Files in the output directory:

    config.json, vocab.*.json, weights.*.safetensors   the best model so far (by validation)
    metrics.jsonl                                      one JSON line per finished epoch
    training.png                                       perplexity and learning rate per epoch
    resume/                                            the latest state, while the run is going

``resume/`` is a checkpoint of its own: the current weights, the optimiser state, the hidden state
carried between windows, the dropout generator, the position in the epoch and the history. It is
written before the first window, then atomically every ``checkpoint_every`` windows and at the
end of every epoch, so a run killed at any moment loses at most that much work, and ``--resume``
continues exactly where the snapshot left off: the result is the same as that of a run that was
never interrupted.

The snapshot is also the rollback point when training diverges (a NaN or infinite loss or
gradient, or a validation result that is not finite or is worse than twice a uniform guess's):
the run reloads it, halves the learning rate, says so in the log and in ``metrics.jsonl``, and
goes on, up to ``max_recoveries`` times. Being a reload of the same snapshot ``--resume`` uses, a
recovery keeps resumed runs identical to uninterrupted ones. A diverged model is never saved.

A failed write (a full disk, a directory made read-only) stops the run with ``OutputError``; the
output directory is probed before training, so a directory that cannot be written fails at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import model
from model.inference.checkpoint import (
    CONFIG_FILE,
    language_model,
    load_checkpoint,
    save_checkpoint,
    write_atomic,
)
from model.inference.evaluation import (
    evaluate_file,
    perplexity,
)
from model.network.class_softmax import describe as describe_classes
from model.network.layers import NonFiniteError
from model.training.config import (
    AUTO_BATCH,
    AUTO_EPOCH_UPDATES,
    AUTO_EPOCHS,
    AUTO_MIN_UPDATES,
    TrainConfig,
)
from model.training.plot import plot_history
from model.training.snapshot import (
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
    windows_in_epoch,
)
from model.training.steps import (
    Progress,
    format_duration,
    format_perplexity,
)
from model.training.tasks import TrainingTask, task_for

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def diverged_cross_entropy(vocab_size: int) -> float:
    """The validation cross-entropy above which a model has diverged: 2 ln V, twice that of a
    uniform guess over the V words (for the gap-filling model too: it also picks one of V).

    Such a model's perplexity, V², is worse than guessing by a factor V: training has blown it
    up, not merely failed to teach it. A model fresh from its random initialisation scores about
    ln V, and real runs are far below ln V after one epoch, so no sound model comes near it. (A
    bound at the float overflow, ~709 nats, let models of perplexity e^666 be saved as the best.)
    """
    return 2 * math.log(vocab_size)


class DivergedError(NonFiniteError):
    """Training diverged even after its recoveries; ``best_epoch`` is the epoch whose model this
    run saved in ``out``, or None when it saved none."""

    def __init__(self, message: str, out: Path, best_epoch: int | None) -> None:
        super().__init__(message)
        self.out, self.best_epoch = out, best_epoch


class OutputError(TrainingError):
    """The output directory cannot be written; the message says what and whether --resume can."""


def check_output_dir(out: Path, resume: bool, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out}: exists and is not a directory")
    if resume:
        if not (out / RESUME_DIR / CONFIG_FILE).exists():
            raise TrainingError(f"{out}: no saved run to resume (no {RESUME_DIR}/{CONFIG_FILE})")
        check_writable(out / RESUME_DIR)
    elif (out / CONFIG_FILE).exists() and not force:
        raise TrainingError(
            f"{out}: already holds a model; pass --force to replace it or --resume to continue it"
        )
    check_writable(out)
    if force and not resume:  # a new run: the old model stays until the first epoch replaces it
        try:
            shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
            for name in (METRICS_FILE, PLOT_FILE):
                (out / name).unlink(missing_ok=True)
        except OSError as e:
            raise OutputError(f"{e.filename}: cannot be removed ({e.strerror})") from None


def check_writable(directory: Path) -> None:
    """Create and delete a file in ``directory`` (or in its nearest existing parent, when it is
    still to be made): permission bits say nothing to root, and an immutable (``chattr +i``) or
    read-only-mounted directory is only found out by writing, which had better fail now than
    after an epoch of training."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".nextword-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(
            f"{directory}: cannot write the output there ({e.strerror or e}); "
            "choose another --out or make it writable"
        ) from None


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


def run_epoch(run: Run, stop: StopRequest) -> float:
    """Train over the rest of the current epoch; returns its training tokens per second."""
    state, cfg = run.state, run.cfg
    steps = task_for(cfg).epoch_steps(state, cfg, run.corpus)
    start, tokens = time.perf_counter(), 0
    desc = f"epoch {state.epoch + 1}/{cfg.planned_epochs}"
    epochs_after = cfg.planned_epochs - state.epoch - 1
    progress = Progress(
        cfg.progress_every, desc, len(steps), state.step, epochs_after, run.between_epochs
    )
    with tqdm(
        total=len(steps), initial=state.step, desc=desc, unit="step", file=sys.stderr, disable=None
    ) as bar:
        for step in steps[state.step :]:
            result = step()
            state.step += 1
            state.loss_sum += result.loss * result.tokens
            state.tokens += result.tokens
            tokens += result.tokens
            speed = tokens / max(time.perf_counter() - start, 1e-9)
            loss = state.loss_sum / max(state.tokens, 1)
            if state.step % 10 == 0 or state.step == len(steps):
                bar.set_postfix_str(
                    f"loss {loss:.3f}  ppl {format_perplexity(perplexity(loss), 1)}  "
                    f"{speed:,.0f} tok/s  run ETA {format_duration(progress.eta(state.step)[1])}"
                )
            bar.update(1)
            progress.update(state.step, loss, speed)
            if stop.requested:
                run.snapshot()
                raise StoppedError("stopped; the run is saved: continue it with --resume")
            if state.step % cfg.checkpoint_every == 0 and state.step < len(steps):
                run.snapshot()
    return tokens / max(time.perf_counter() - start, 1e-9)


def validate(state: RunState, corpus: Corpus, task: TrainingTask) -> dict[str, float]:
    """Validation cross-entropies by the task's conventions; the first one selects the model."""
    return task.validate(state, corpus)


def end_epoch(run: Run, speed: float) -> None:
    """Validate, keep the best model, decay the learning rate on a plateau, record the metrics.

    Raises NonFiniteError, before anything is written, when the validation result is not finite
    or is worse than twice a uniform guess's (``diverged_cross_entropy``): such a model must
    never become the saved one.
    """
    state, cfg, corpus, out = run.state, run.cfg, run.corpus, run.out
    if state.cap is not None:
        state.cap.apply_exactly(state.net.params)  # the saved model meets the bound exactly
    task = task_for(cfg)
    started = time.perf_counter()
    figures = validate(state, corpus, task)
    validate_s = time.perf_counter() - started
    valid_ce = next(iter(figures.values()))
    limit = diverged_cross_entropy(len(corpus.vocab))
    if not math.isfinite(valid_ce):
        raise NonFiniteError(f"validation cross-entropy is {valid_ce:.6g}")
    if not valid_ce <= limit:
        raise NonFiniteError(
            f"validation cross-entropy is {valid_ce:.4g} nats, more than twice that of a uniform "
            f"guess (2 ln V = {limit:.3g}, V = {len(corpus.vocab):,} words)"
        )
    train_ce = state.loss_sum / max(state.tokens, 1)
    improved = valid_ce < state.best_valid
    record: dict[str, Any] = {
        "epoch": state.epoch + 1,
        "train_loss": round(train_ce, 5),
        "train_ppl": json_perplexity(train_ce),
        "valid_loss": round(valid_ce, 5),
        "valid_ppl": json_perplexity(valid_ce),
        **named_perplexities(figures, "valid_{}_ppl"),
        "lr": state.optimizer.lr,
        "tokens_per_s": round(speed),
        "validate_s": round(validate_s, 2),
        "elapsed_s": round(state.elapsed, 1),
        "best": improved,
        "recoveries": state.recoveries,
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
            **named_perplexities(figures, "valid_{}_perplexity"),
            "task": task.name,
            "nextword_version": model.__version__,
            "tokenizer_libraries": corpus.tokenizer.library_versions(),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        lm = language_model(state.net, corpus.vocab, corpus.tokenizer)
        lm.use_spelling(corpus.spelling)  # words outside the vocabulary scored by spelling
        with run.writing(f"the best model in {out}"):
            save_checkpoint(out, lm, metadata)
    else:
        state.bad_epochs += 1
        state.optimizer.decay(cfg.lr_decay)
    state.history.append(record)
    with run.writing(str(out / METRICS_FILE)):
        write_atomic(out / METRICS_FILE, "".join(_json_line(r) for r in state.history).encode())
    state.epoch, state.step, state.carry, state.loss_sum, state.tokens = (
        state.epoch + 1,
        0,
        None,
        0.0,
        0,
    )
    state.recoveries = []
    mark = "  *best" if improved else f"  (no improvement; lr → {state.optimizer.lr:g})"
    label = task.perplexity_label
    train_ppl, valid_ppl = (format_perplexity(record[k]) for k in ("train_ppl", "valid_ppl"))
    ppl = f"train {label} {train_ppl}, valid {label} {valid_ppl}"
    if len(figures) > 1:  # "(stream 91.20, isolated 97.85)": the first one chose the model
        named = (f"{name} {format_perplexity(perplexity(ce))}" for name, ce in figures.items())
        ppl += f" ({', '.join(named)})"
    log(f"epoch {record['epoch']}: {ppl}, {speed:,.0f} tok/s, validation {validate_s:.1f} s{mark}")


def named_perplexities(figures: dict[str, float], key: str) -> dict[str, float | None]:
    """Each validation figure's perplexity under its own key, where a task has several (a
    next-word model's "stream" and "isolated"); nothing for a task with one."""
    if len(figures) < 2:
        return {}
    return {key.format(name): json_perplexity(ce) for name, ce in figures.items()}


def json_perplexity(cross_entropy: float) -> float | None:
    """The perplexity for metrics.jsonl, rounded; None (null) where it overflows a float: JSON
    has no Infinity, and the loss beside it says what it was."""
    ppl = perplexity(cross_entropy)
    return round(ppl, 3) if math.isfinite(ppl) else None


def _json_line(record: dict[str, Any]) -> str:
    """One metrics.jsonl line, strict JSON: an infinite perplexity (in the history of a run
    snapshotted by an older version) is written as null."""
    finite = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    return json.dumps(finite, allow_nan=False) + "\n"


class Run:
    """The run in progress: its configuration, data, state and output directory.

    ``snapshot`` saves the state in ``resume/``; ``recover`` rolls back to that snapshot after a
    divergence; ``writing`` turns a failed write into an OutputError that says what was lost.
    """

    def __init__(self, out: Path, cfg: TrainConfig, corpus: Corpus, state: RunState) -> None:
        self.out, self.cfg, self.corpus, self.state = out, cfg, corpus, state
        self.started = time.perf_counter()  # since when training time is not yet in the state
        self.between_epochs = 0.0  # seconds the last epoch spent after its windows

    def snapshot(self) -> None:
        """Save the state in ``resume/``: the rollback point, so only finite weights qualify."""
        bad = [k for k, p in self.state.net.params.items() if not np.isfinite(p).all()]
        if bad:
            raise NonFiniteError(f"non-finite weights in {bad}")
        with self.writing(f"the resume snapshot in {self.out / RESUME_DIR}"):
            save_state(self.out, self.state, self.cfg, self.corpus, self.started)
        self.started = time.perf_counter()

    def account_time(self) -> None:
        self.state.elapsed += time.perf_counter() - self.started
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            if (self.out / RESUME_DIR / CONFIG_FILE).exists():
                after = f"the last snapshot in {self.out / RESUME_DIR} is intact: make the "
                after += "directory writable and continue with --resume"
            else:
                after = "no snapshot was saved: start again once the directory is writable"
            raise OutputError(
                f"cannot write {what} ({e.strerror or e}); training stopped; {after}"
            ) from None

    def recover(self, error: NonFiniteError) -> None:
        """Reload the last snapshot with half its learning rate, or re-raise when out of tries."""
        state, cfg = self.state, self.cfg
        done = state.recoveries_so_far()
        if done >= cfg.max_recoveries:
            tries = f" after {done} recoveries" if done else ""
            best = [r["epoch"] for r in state.history if r["best"]]
            raise DivergedError(f"{error}{tries}", self.out, best[-1] if best else None) from None
        where = f"epoch {state.epoch + 1}, after window {state.step}"
        self.state = load_state(self.out, cfg, self.corpus)
        self.state.optimizer.lr /= 2
        self.state.recoveries.append(
            {
                "after_window": state.step,
                "error": str(error),
                "resumed_from_window": self.state.step,
                "lr": self.state.optimizer.lr,
            }
        )
        log(
            f"{where}: training diverged ({error}); rolled back to window {self.state.step} of "
            f"epoch {self.state.epoch + 1} and halved the learning rate to "
            f"{self.state.optimizer.lr:g} (recovery {done + 1} of at most {cfg.max_recoveries})"
        )
        self.snapshot()  # a run killed from now on resumes with the halved rate


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
    chosen = (cfg.batch_size is None, cfg.epochs is None)
    cfg, corpus = prepare_corpus(cfg)
    cfg = cfg.with_epochs(windows_in_epoch(cfg, corpus))
    state = load_state(out, cfg, corpus) if resume else new_state(cfg, corpus)
    out.mkdir(parents=True, exist_ok=True)
    log_start(cfg, corpus, state, resume)
    if any(chosen):
        log(planned(cfg, windows_in_epoch(cfg, corpus), *chosen))
    run = Run(out, cfg, corpus, state)
    if not resume:
        run.snapshot()  # the first rollback point, and a kill -9 in the first windows resumes
    # A diverging step overflows somewhere before NonFiniteError names it: no warnings meanwhile.
    with (stop or StopRequest()).installed() as stop, np.errstate(over="ignore", invalid="ignore"):
        while run.state.epoch < cfg.planned_epochs and run.state.bad_epochs < cfg.patience:
            try:
                speed = run_epoch(run, stop)
                windows_done = time.perf_counter()
                run.account_time()
                end_epoch(run, speed)
            except NonFiniteError as e:
                run.recover(e)
                continue
            run.snapshot()
            run.between_epochs = time.perf_counter() - windows_done
    if run.state.bad_epochs >= cfg.patience:
        log(f"stopped early: {cfg.patience} epochs without improvement")
    finish(run)
    return out


def planned(cfg: TrainConfig, updates: int, batch_chosen: bool, epochs_chosen: bool) -> str:
    """The log line that says what the defaults chose for this corpus, and how to override."""
    parts = []
    if batch_chosen:
        parts.append(f"batch size {cfg.sequences} (tokens / (bptt × {AUTO_MIN_UPDATES}), between "
                     f"{AUTO_BATCH[1]} and {AUTO_BATCH[0]}; --batch-size to choose)")  # fmt: skip
    if epochs_chosen:
        parts.append(f"{cfg.planned_epochs} epochs of {updates:,} updates (at least "
                     f"{AUTO_EPOCH_UPDATES:,} updates, {AUTO_EPOCHS[0]} to {AUTO_EPOCHS[1]} "
                     "epochs; --epochs to choose)")  # fmt: skip
    return "for this corpus: " + "; ".join(parts)


def log_start(cfg: TrainConfig, corpus: Corpus, state: RunState, resume: bool) -> None:
    size = f"{cfg.cell} {cfg.layers}×{cfg.hidden}, {state.net.num_parameters():,} parameters"
    data = f"vocabulary {len(corpus.vocab):,}, {corpus.info['train_tokens']:,} training tokens"
    where = f"; resuming at epoch {state.epoch + 1}, window {state.step}" if resume else ""
    log(f"{size}, {data}{where}")
    if state.net.classes is not None:
        log(describe_classes(state.net.classes))
    if state.cap is not None:
        log(f"recurrent weights kept at spectral norm ≤ {state.cap.limit:g} (--max-recurrent-norm)")
    cut = corpus.info.get("sentences_cut")
    if cut:
        log(f"cut {cut['train']:,} training and {cut['valid']:,} validation sentences longer than "
            f"{cut['max_tokens']} tokens into pieces of at most that many: this task reads whole "
            "sentences, one padded batch at a time")  # fmt: skip
    if task_for(cfg).name == "gap-filling":
        note = "perplexities are of the gap-filling task, P(w | both sides)"
        log(f"bidirectional: {note}; they are not comparable with left-to-right perplexity")


def finish(run: Run) -> None:
    """Score the test set with the best model, draw the plot, and drop the resume snapshot."""
    out, cfg = run.out, run.cfg
    if cfg.test:
        lm = load_checkpoint(out)
        try:
            result = evaluate_file(lm, cfg.test, cfg.split)
        except NonFiniteError as e:
            log(f"test: perplexity undefined ({e}); the model is kept ({cfg.test})")
        else:
            with run.writing(f"the test result into the model in {out}"):
                save_checkpoint(
                    out,
                    lm,
                    lm.metadata | {f"test_{k}": v for k, v in result.items()},
                )
            tokens = f"{result['tokens']:,} tokens"
            isolated = result.get("isolated_perplexity")
            also = "" if isolated is None else f" (each sentence alone: {isolated:.2f})"
            log(f"test: perplexity {result['perplexity']:.2f}{also}, {tokens} ({cfg.test})")
    try:
        plotted = plot_history(run.state.history, out / PLOT_FILE)
    except OSError as e:
        log(f"plot not written: {out / PLOT_FILE}: {e.strerror or e}")
    except (ValueError, OverflowError) as e:  # matplotlib, on values it cannot place
        log(f"plot not written: {out / PLOT_FILE}: {type(e).__name__}: {e}")
    else:
        if plotted:
            log(f"plot: {out / PLOT_FILE}")
        else:
            log("plot skipped: matplotlib is not installed (pip install 'nextword[plot]')")
    shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
    log(f"model: {out}")
