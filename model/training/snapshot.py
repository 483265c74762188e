"""What a training run is made of, and how it is saved and restored.

- ``Corpus``: the tokenised, batched training and validation text, and where it came from.
- ``RunState``: everything that changes while training: weights, optimiser, hidden state carried
  between windows, dropout generator, position in the epoch, history.

``save_state`` writes a ``RunState`` into ``OUT/resume`` as a checkpoint of its own (atomic: the
previous snapshot stays valid until the new one is complete); ``load_state`` restores it exactly,
so a resumed run continues as if it had never stopped. ``load_state`` first checks the snapshot
like a checkpoint: the sha256 of its metadata (``metadata_sha256``, as a checkpoint keeps one of
every data file), then every field's type and range, and its consistency with the saved weights,
the history and the training configuration, so an edited or damaged ``resume/config.json`` is
refused, naming the field, instead of failing later or, worse, training a different model.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.inference.checkpoint import (
    CONFIG_FILE,
    language_model,
    load_network_checkpoint,
    load_tensors,
    read_config,
    save_checkpoint,
)
from model.inference.gap_filling_lm import GapFillingLM
from model.inference.recurrent_lm import RecurrentLM
from model.inference.spelling import SpellingModel
from model.network.bidirectional import BiRNNLM
from model.network.recurrent import RNNLM, NetworkState
from model.text.batches import batchify, sentence_stream, target_mask
from model.text.corpus import CorpusError, file_sha256, load_sentences
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from model.training.config import RESUMABLE_CHANGES, TrainConfig
from model.training.optim import SGD, Adam, NormCap, make_optimizer
from model.training.tasks import task_for
from model.values import is_int, is_number, show

RESUME_DIR = "resume"
MAX_SENTENCE_TOKENS = 256  # a sentence read whole in training (sentence batches) is cut beyond
# The metadata sections that define the run, and the key of their sha256 in the metadata.
DIGESTED_SECTIONS = ("resume", "training", "corpus")
DIGEST_KEY = "metadata_sha256"


class TrainingError(RuntimeError):
    """The run cannot start or go on; the message says why and what to do."""


class StoppedError(TrainingError):
    """SIGINT or SIGTERM stopped the run after saving it; ``--resume`` continues it."""


class ResumeError(TrainingError):
    """The snapshot in ``OUT/resume`` is not one this run can continue; the message names why."""


@dataclass
class Corpus:
    tokenizer: Tokenizer
    vocab: Vocabulary
    train: np.ndarray  # (T_total, batch_size) ids
    valid: np.ndarray  # (T_total, eval batch) ids
    info: dict[str, Any]  # paths, checksums and token counts, stored in the checkpoint
    train_sentences: list[np.ndarray]  # ids of each sentence (the gap-filling model's unit)
    valid_sentences: list[np.ndarray]
    spelling: SpellingModel | None = None  # the open vocabulary, of every word type of train


def prepare_corpus(cfg: TrainConfig) -> tuple[TrainConfig, Corpus]:
    """Read, split and tokenise the corpora, build the vocabulary from train only, and batch.
    Returns the configuration with its batch size set (``with_batch_size``) and the corpus."""
    tokenizer = Tokenizer(cfg.tokenizer, cfg.lowercase, cfg.normalize)
    assert cfg.train is not None
    train_path = cfg.train
    train = load_sentences(train_path, tokenizer, cfg.split)
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
    cfg = cfg.with_batch_size(len(train_stream))
    if len(train_stream) < cfg.sequences * (cfg.bptt + 1):
        need = cfg.sequences * (cfg.bptt + 1)
        raise CorpusError(
            f"{cfg.train}: {len(train_stream)} tokens, fewer than one batch "
            f"(batch_size × (bptt + 1) = {need}); use a smaller --batch-size or --bptt"
        )
    valid_stream = sentence_stream(valid, vocab)
    info: dict[str, Any] = {
        "train": cfg.train,
        "train_sha256": file_sha256(train_path),
        "train_sentences": len(train),
        "train_tokens": int(target_mask(train_stream[1:], vocab).sum()),
        "valid": cfg.valid or f"last {cfg.valid_fraction:.0%} of train",
        "valid_sha256": file_sha256(cfg.valid) if cfg.valid else None,
        "valid_tokens": int(target_mask(valid_stream[1:], vocab).sum()),
    }
    eval_batch = max(1, min(cfg.eval_batch_size, len(valid_stream) // 2))
    train_ids, valid_ids = [vocab.encode(s) for s in train], [vocab.encode(s) for s in valid]
    if task_for(cfg).reads_whole_sentences:  # one padded batch a sentence's length: bounded
        (train_ids, cut_train), (valid_ids, cut_valid) = map(cut_long, (train_ids, valid_ids))
        if cut_train or cut_valid:
            info["sentences_cut"] = {"train": cut_train, "valid": cut_valid,
                                     "max_tokens": MAX_SENTENCE_TOKENS}  # fmt: skip
    return cfg, Corpus(
        tokenizer,
        vocab,
        batchify(train_stream, cfg.sequences),
        batchify(valid_stream, eval_batch),
        info,
        train_ids,
        valid_ids,
        SpellingModel.train({w for sentence in train for w in sentence}, source="training text"),
    )


def cut_long(sentences: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Sentences with every one longer than ``MAX_SENTENCE_TOKENS`` cut into pieces of at most
    that many tokens (in order), and how many were cut. A task that batches whole sentences
    holds a (T, N, V) output for the longest: one 5 MB line asked for 18.6 GiB."""
    out: list[np.ndarray] = []
    cut = 0
    for s in sentences:
        if len(s) <= MAX_SENTENCE_TOKENS:
            out.append(s)
            continue
        cut += 1
        out.extend(s[i : i + MAX_SENTENCE_TOKENS] for i in range(0, len(s), MAX_SENTENCE_TOKENS))
    return out, cut


@dataclass
class RunState:
    """Everything that changes during a run; saved in ``resume/``."""

    net: RNNLM | BiRNNLM
    optimizer: SGD | Adam
    rng: np.random.Generator  # dropout masks
    cap: NormCap | None = None  # bound on ‖Wh‖₂ (a ReLU RNN's by default), with its estimates
    carry: NetworkState | None = None  # hidden state carried into the next window
    epoch: int = 0  # finished epochs
    step: int = 0  # windows done in the current epoch
    loss_sum: float = 0.0  # token-weighted training loss so far in the current epoch
    tokens: int = 0  # counted training tokens so far in the current epoch
    best_valid: float = math.inf  # best validation cross-entropy
    bad_epochs: int = 0  # epochs since the last improvement
    elapsed: float = 0.0  # training seconds, across restarts
    history: list[dict[str, Any]] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)  # in the current epoch

    SCALARS = (
        "epoch",
        "step",
        "loss_sum",
        "tokens",
        "best_valid",
        "bad_epochs",
        "elapsed",
        "history",
        "recoveries",
    )

    def recoveries_so_far(self) -> int:
        """Divergences survived in the whole run (earlier epochs and this one)."""
        return sum(len(r.get("recoveries", [])) for r in self.history) + len(self.recoveries)


def new_state(cfg: TrainConfig, corpus: Corpus) -> RunState:
    config = cfg.model_config(len(corpus.vocab), corpus.vocab.counts)
    net = task_for(cfg).new_network(config, cfg.seed)
    return RunState(
        net,
        make_optimizer(cfg.optimizer, cfg.learning_rate, warmup_updates(cfg, corpus)),
        np.random.default_rng(cfg.seed + 1),
        norm_cap(cfg, net),
    )


def norm_cap(cfg: TrainConfig, net: RNNLM | BiRNNLM) -> NormCap | None:
    """The bound on every recurrent matrix Wh that ``cfg`` asks for, or None."""
    if not cfg.recurrent_norm_cap:
        return None
    return NormCap(sorted(k for k in net.params if k.endswith(".Wh")), cfg.recurrent_norm_cap)


def warmup_updates(cfg: TrainConfig, corpus: Corpus) -> int:
    """The optimiser's warm-up for this corpus (``TrainConfig.warmup_updates``)."""
    return cfg.warmup_updates(windows_in_epoch(cfg, corpus))


def windows_in_epoch(cfg: TrainConfig, corpus: Corpus) -> int:
    """Updates per epoch: BPTT windows, or sentence batches for a gap-filling model."""
    return task_for(cfg).updates_per_epoch(cfg, corpus)


def save_state(
    out: Path, state: RunState, cfg: TrainConfig, corpus: Corpus, started: float
) -> None:
    """Snapshot the run into ``out/resume``; atomic, the old snapshot stays until replaced."""
    state.elapsed += time.perf_counter() - started
    carry: dict[str, np.ndarray] = {}
    for layer, layer_state in enumerate(state.carry or []):
        carry.update({f"{layer}.{k}": t for k, t in enumerate(layer_state)})
    metadata: dict[str, Any] = {
        "resume": {name: getattr(state, name) for name in RunState.SCALARS}
        | {"rng": state.rng.bit_generator.state, "optimizer": cfg.optimizer},
        "training": cfg.to_dict(),
        "corpus": corpus.info,
    }
    lm = language_model(state.net, corpus.vocab, corpus.tokenizer)
    metadata[DIGEST_KEY] = metadata_digest(metadata)
    tensors: dict[str, dict[str, np.ndarray]] = {
        "optimizer": state.optimizer.state_dict(),
        "carry": carry,
    }
    if state.cap is not None:
        tensors["norm_cap"] = state.cap.state_dict()
    save_checkpoint(out / RESUME_DIR, lm, metadata, tensors)


def metadata_digest(metadata: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of the sections that define the
    run, ``DIGESTED_SECTIONS``; a missing one counts as null."""
    sections = {name: metadata.get(name) for name in DIGESTED_SECTIONS}
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_digest(metadata: Any, where: Path) -> None:
    """The metadata is as ``save_state`` wrote it: any edit, however plausible its values (a
    different bptt or clip trains a different model, which no field check can tell), is refused,
    as a checkpoint refuses a data file whose sha256 differs. Snapshots of versions before the
    digest have none; their fields are checked one by one, as every snapshot's are."""
    if not isinstance(metadata, dict) or DIGEST_KEY not in metadata:
        return
    if metadata[DIGEST_KEY] != metadata_digest(metadata):
        raise ResumeError(f"{where}: metadata was edited (sha256 does not match); cannot resume")


def resumed_config(out: Path, given: dict[str, Any]) -> TrainConfig:
    """The saved run's configuration, with the options that may change on resume applied."""
    where = out / RESUME_DIR / CONFIG_FILE
    metadata = read_config(out / RESUME_DIR).get("metadata")
    check_digest(metadata, where)
    saved = section(metadata, "training", where)
    if not isinstance(saved.get("train"), str) or not saved["train"]:
        raise ResumeError(
            f"{where}: metadata.training.train must be the training corpus's path, got "
            f"{show(saved.get('train'))}; cannot resume"
        )
    changed = sorted(
        k for k, v in given.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v
    )
    if changed:
        raise TrainingError(
            f"--resume continues the saved run; these options differ from it: {changed}"
        )
    try:
        return TrainConfig.from_dict(
            as_started(saved) | {k: given[k] for k in RESUMABLE_CHANGES if k in given},
            where="training",
        )
    except (TypeError, ValueError) as e:
        raise ResumeError(f"{where}: metadata.training: {e}; cannot resume") from None


# Options added after a run could be saved, with the value that does what the versions before
# them did: a run saved by such a version continues as it started.
ADDED_OPTIONS = {"warmup": 0, "normalize": "none"}


def as_started(saved: dict[str, Any]) -> dict[str, Any]:
    """A run saved by an older version continues as it started: options it lacks take the
    value that reproduces that version (``ADDED_OPTIONS``); one saved before per-cell learning
    rates and the ReLU norm bound existed (no ``max_recurrent_norm``) keeps SGD's rate 20 or
    Adam's 0.002, and no bound."""
    saved = {k: v for k, v in ADDED_OPTIONS.items() if k not in saved} | saved
    if "max_recurrent_norm" in saved:
        return saved
    lr = saved.get("lr")
    if lr is None:
        lr = 20.0 if saved.get("optimizer", "sgd") == "sgd" else 0.002
    return saved | {"lr": lr, "max_recurrent_norm": 0.0}


def section(metadata: Any, name: str, where: Path) -> dict[str, Any]:
    """``metadata[name]``, which must be a JSON object."""
    value = metadata.get(name) if isinstance(metadata, dict) else None
    if not isinstance(value, dict):
        raise ResumeError(f"{where}: metadata.{name} is missing or not an object; cannot resume")
    return value


def load_state(out: Path, cfg: TrainConfig, corpus: Corpus) -> RunState:
    """The run saved in ``out/resume``, checked field by field and against the data of this call."""
    directory, where = out / RESUME_DIR, out / RESUME_DIR / CONFIG_FILE
    lm = load_network_checkpoint(directory)  # sizes, hashes, the weights against the config
    check_digest(lm.metadata, where)
    check_origin(lm, cfg, corpus, where)
    resume = section(lm.metadata, "resume", where)
    check_counters(resume, cfg, corpus, where)
    rng = restore_rng(resume.get("rng"), where)
    if resume.get("optimizer") != cfg.optimizer:
        raise ResumeError(
            f"{where}: resume.optimizer is {resume.get('optimizer')!r}, but the run was trained "
            f"with {cfg.optimizer!r} (metadata.training.optimizer); cannot resume"
        )
    optimizer = make_optimizer(cfg.optimizer, cfg.learning_rate, warmup_updates(cfg, corpus))
    restore_tensors(optimizer, directory, "optimizer", lm.net, where)
    if not 0 < optimizer.lr <= cfg.learning_rate:  # decay and recoveries only ever lower it
        raise ResumeError(
            f"{where}: optimizer lr {optimizer.lr} is not in (0, {cfg.learning_rate}], the run's "
            "starting learning rate; cannot resume"
        )
    cap = norm_cap(cfg, lm.net)
    if cap is not None:
        restore_tensors(cap, directory, "norm_cap", lm.net, where)
    scalars = {k: resume[k] for k in RunState.SCALARS}
    state = RunState(lm.net, optimizer, rng, cap, **scalars)
    state.carry = restore_carry(directory, cfg, lm.net, state.step, where)
    return state


def check_origin(
    lm: RecurrentLM | GapFillingLM, cfg: TrainConfig, corpus: Corpus, where: Path
) -> None:
    """The snapshot belongs to this corpus and configuration: same files, vocabulary, network."""
    saved_corpus = section(lm.metadata, "corpus", where)
    for key in ("train_sha256", "valid_sha256"):
        if saved_corpus.get(key) != corpus.info[key]:
            raise TrainingError(
                f"{corpus.info[key[:5]]}: the file changed since the run started; cannot resume"
            )
    if lm.vocab.tokens != corpus.vocab.tokens:
        raise TrainingError(
            "the vocabulary built from the corpus differs from the saved run; cannot resume"
        )
    expected = cfg.model_config(len(corpus.vocab), corpus.vocab.counts).to_dict()
    saved = lm.net.config.to_dict()
    names = {"num_layers": "layers", "embed_size": "emb", "hidden_size": "hidden"}
    differ = [
        f"{names.get(k, k)} {expected[k]!r} ≠ {saved[k]!r}"
        for k in expected
        if expected[k] != saved[k]
    ]
    if differ:
        raise ResumeError(
            f"{where}: metadata.training does not match the saved network ({', '.join(differ)}); "
            "cannot resume"
        )


def check_counters(resume: dict[str, Any], cfg: TrainConfig, corpus: Corpus, where: Path) -> None:
    """Every counter of ``resume`` has its type and range, and they agree with one another, with
    the history and with the windows an epoch of this corpus has."""
    windows = windows_in_epoch(cfg, corpus)
    resume.setdefault("recoveries", [])  # snapshots written before recoveries existed
    missing = [k for k in (*RunState.SCALARS, "rng", "optimizer") if k not in resume]
    if missing:
        raise ResumeError(f"{where}: resume.{missing[0]} is missing; cannot resume")
    r, records = resume, resume["history"]
    if not isinstance(records, list) or not all(isinstance(x, dict) for x in records):
        records = None  # refused by the first rule below
    rules: list[tuple[str, Callable[[], bool], str]] = [
        ("history", lambda: records is not None, "a list of epoch records"),
        ("history", lambda: all(x.get("epoch") == i + 1 for i, x in enumerate(records)),
         "records of epochs 1, 2, … in order"),
        ("epoch", lambda: is_int(r["epoch"]) and r["epoch"] == len(records),
         f"the number of epoch records in resume.history ({len(records or [])})"),
        ("step", lambda: is_int(r["step"]) and 0 <= r["step"] <= windows,
         f"an integer in 0..{windows} (the windows in an epoch)"),
        ("tokens", lambda: is_int(r["tokens"]) and r["tokens"] >= 0, "an integer ≥ 0"),
        ("loss_sum", lambda: is_number(r["loss_sum"]) and 0 <= r["loss_sum"] < math.inf,
         "a finite number ≥ 0"),
        ("elapsed", lambda: is_number(r["elapsed"]) and 0 <= r["elapsed"] < math.inf,
         "a finite number ≥ 0 (seconds)"),
        ("best_valid", lambda: is_number(r["best_valid"]) and r["best_valid"] >= 0,
         "a cross-entropy ≥ 0, or Infinity before the first epoch"),
        ("bad_epochs", lambda: is_int(r["bad_epochs"]) and 0 <= r["bad_epochs"] <= r["epoch"],
         "an integer in 0..resume.epoch"),
        ("recoveries", lambda: isinstance(r["recoveries"], list)
         and all(isinstance(x, dict) for x in r["recoveries"]), "a list of records"),
    ]  # fmt: skip
    for name, ok, expected in rules:
        if not ok():
            raise ResumeError(
                f"{where}: resume.{name} must be {expected}, got {r[name]!r:.80}; cannot resume"
            )
    if resume["step"] == 0 and (resume["tokens"] or resume["loss_sum"]):
        raise ResumeError(
            f"{where}: resume.tokens and resume.loss_sum must be 0 at window 0 of an epoch "
            f"(resume.step), got {resume['tokens']!r} and {resume['loss_sum']!r}; cannot resume"
        )
    for i, record in enumerate(records):
        check_record(record, f"resume.history[{i}]", where)
    for i, recovery in enumerate(resume["recoveries"]):
        check_recovery(recovery, f"resume.recoveries[{i}]", where)
    check_best(resume, records, where)
    check_tokens(resume, cfg, corpus, where)


# What an epoch record holds (the log, metrics.jsonl, the plot and the recoveries count read it):
# each field's rule and what it must be. "recoveries" is absent from records of older versions.
PERPLEXITY = "a perplexity ≥ 1, or null where it overflowed"
RECORD_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "train_loss": (lambda v: is_number(v) and 0 <= v < math.inf, "a finite number ≥ 0"),
    "train_ppl": (lambda v: v is None or (is_number(v) and v >= 1), PERPLEXITY),
    "valid_loss": (lambda v: is_number(v) and 0 <= v < math.inf, "a finite number ≥ 0"),
    "valid_ppl": (lambda v: v is None or (is_number(v) and v >= 1), PERPLEXITY),
    "lr": (lambda v: is_number(v) and 0 < v < math.inf, "a finite number > 0"),
    "tokens_per_s": (lambda v: is_number(v) and 0 <= v < math.inf, "a finite number ≥ 0"),
    "elapsed_s": (lambda v: is_number(v) and 0 <= v < math.inf, "a finite number ≥ 0"),
    "best": (lambda v: isinstance(v, bool), "true or false"),
}
RECOVERY_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "after_window": (lambda v: is_int(v) and v >= 0, "an integer ≥ 0"),
    "error": (lambda v: isinstance(v, str), "a string"),
    "resumed_from_window": (lambda v: is_int(v) and v >= 0, "an integer ≥ 0"),
    "lr": (lambda v: is_number(v) and 0 < v < math.inf, "a finite number > 0"),
}


def check_fields(
    value: dict[str, Any],
    fields: dict[str, tuple[Callable[[Any], bool], str]],
    name: str,
    where: Path,
) -> None:
    for key, (ok, expected) in fields.items():
        if key not in value:
            raise ResumeError(f"{where}: {name}.{key} is missing; cannot resume")
        if not ok(value[key]):
            raise ResumeError(
                f"{where}: {name}.{key} must be {expected}, got {show(value[key])}; cannot resume"
            )


def check_record(record: dict[str, Any], name: str, where: Path) -> None:
    """One epoch record of the history (its ``epoch`` is checked with the order)."""
    check_fields(record, RECORD_FIELDS, name, where)
    recoveries = record.get("recoveries", [])
    if not isinstance(recoveries, list) or not all(isinstance(x, dict) for x in recoveries):
        raise ResumeError(
            f"{where}: {name}.recoveries must be a list of recovery records, got "
            f"{show(recoveries)}; cannot resume"
        )
    for i, recovery in enumerate(recoveries):
        check_recovery(recovery, f"{name}.recoveries[{i}]", where)


def check_recovery(recovery: dict[str, Any], name: str, where: Path) -> None:
    check_fields(recovery, RECOVERY_FIELDS, name, where)


def check_best(resume: dict[str, Any], records: list[dict[str, Any]], where: Path) -> None:
    """``best_valid`` is the best validation in the history, and ``bad_epochs`` counts the
    epochs after the last best one: both decide what is saved, when the rate decays and when
    the run stops, so an edit to either would train on differently."""
    best = min((r["valid_loss"] for r in records), default=math.inf)
    found = resume["best_valid"]
    # the records keep 5 decimals, best_valid the exact value: they differ by at most 5e-6
    if not (found == best if math.isinf(best) else abs(found - best) <= 1e-5):
        raise ResumeError(
            f"{where}: resume.best_valid must be the smallest valid_loss in resume.history "
            f"({best}, to 5 decimals), got {show(found)}; cannot resume"
        )
    since = next((i for i, r in enumerate(reversed(records)) if r["best"]), len(records))
    if resume["bad_epochs"] != since:
        raise ResumeError(
            f"{where}: resume.bad_epochs must be the number of epochs since the last best one "
            f"({since}, by resume.history), got {show(resume['bad_epochs'])}; cannot resume"
        )


def check_tokens(resume: dict[str, Any], cfg: TrainConfig, corpus: Corpus, where: Path) -> None:
    """``tokens`` counts the targets of the windows done: at most batch_size × bptt each, and
    never more than the training text has (for a gap-filling model, the only bound)."""
    limit, why = corpus.info["train_tokens"], "the training tokens"
    windowed = task_for(cfg).carries_state  # updates are BPTT windows
    if windowed and resume["step"] * cfg.sequences * cfg.bptt < limit:
        limit, why = resume["step"] * cfg.sequences * cfg.bptt, "resume.step × batch_size × bptt"
    if resume["tokens"] > limit:
        raise ResumeError(
            f"{where}: resume.tokens must be an integer in 0..{limit} ({why}), got "
            f"{show(resume['tokens'])}; cannot resume"
        )


def restore_rng(saved: Any, where: Path) -> np.random.Generator:
    """The dropout generator, from a state numpy accepts for the generator runs start with."""
    rng = np.random.default_rng()
    kind = type(rng.bit_generator).__name__
    if not isinstance(saved, dict) or saved.get("bit_generator") != kind:
        found = saved.get("bit_generator") if isinstance(saved, dict) else saved
        raise ResumeError(
            f"{where}: resume.rng must be the state of a {kind} generator, got {found!r:.80}; "
            "cannot resume"
        )
    try:
        rng.bit_generator.state = saved
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise ResumeError(
            f"{where}: resume.rng is not a valid {kind} state ({e}); cannot resume"
        ) from None
    return rng


def restore_tensors(
    owner: SGD | Adam | NormCap, directory: Path, role: str, net: RNNLM | BiRNNLM, where: Path
) -> None:
    """Load the tensor group ``role`` into ``owner`` once ``owner.check_state`` accepts it."""
    tensors = load_tensors(directory, role)
    shapes = {k: v.shape for k, v in net.params.items()}
    try:
        owner.check_state(tensors, shapes)
    except ValueError as e:
        raise ResumeError(f"{where}: the {role} tensors: {e}; cannot resume") from None
    owner.load_state_dict(tensors)


def restore_carry(
    directory: Path, cfg: TrainConfig, net: RNNLM | BiRNNLM, step: int, where: Path
) -> NetworkState | None:
    """The hidden state carried into the next window: layers × cell states, each (batch, H).

    Only a left-to-right run in the middle of an epoch has one; at an epoch's start it is zero.
    """
    carry = load_tensors(directory, "carry")
    if not task_for(cfg).carries_state or step == 0:
        if carry:
            raise ResumeError(
                f"{where}: the carry tensors must be empty at window 0 or for a gap-filling "
                f"model, found {sorted(carry)[:4]}; cannot resume"
            )
        return None
    n = len(net.init_state(1)[0])  # cell states per layer: (h,) or (h, c)
    expected = {f"{layer}.{k}" for layer in range(cfg.layers) for k in range(n)}
    shape = (cfg.sequences, cfg.hidden)
    if set(carry) != expected:
        raise ResumeError(
            f"{where}: the carry tensors must be {sorted(expected)} at window {step} "
            f"(resume.step), found {sorted(carry)}; cannot resume"
        )
    for key, value in carry.items():
        if value.shape != shape or value.dtype != net.dtype or not np.isfinite(value).all():
            raise ResumeError(
                f"{where}: carry tensor {key!r} must be finite {net.dtype} {shape}, got "
                f"{value.dtype} {value.shape}; cannot resume"
            )
    return [tuple(carry[f"{layer}.{k}"] for k in range(n)) for layer in range(cfg.layers)]
