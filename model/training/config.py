"""Training configuration: defaults < a TOML/JSON file < command-line options.

The effective configuration is stored in the checkpoint, so a run can be repeated from it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from model.network.class_softmax import WordClasses
from model.network.recurrent import ACTIVATIONS, CELLS, SOFTMAXES, ModelConfig
from model.text.corpus import SPLITS
from model.text.tokenize import NORMALIZATIONS, TOKENIZERS
from model.values import is_int, is_number

PATH_FIELDS = ("train", "valid", "test", "out")
RESOURCES = Path(__file__).parents[1] / "resources"
PRESETS = {"default": RESOURCES / "default.toml"}  # the built-in default model
# Options that may change when a run is resumed; any other change would make it a different run.
RESUMABLE_CHANGES = (
    "out",
    "epochs",
    "patience",
    "checkpoint_every",
    "progress_every",
    "max_recoveries",
)
# Learning rates used when --lr is not given, by optimiser and cell. SGD at 20 (Zaremba et al.
# 2014: loss per token, clip 0.25) suits the LSTM; it throws a GRU around (validation perplexity
# jumping above the vocabulary size between epochs) and a vanilla RNN more (tanh saturates; relu
# spikes, and small relu models lose every unit for good), which train smoothly at 10, 5 and 3
# (measured on The Time Machine and on a small synthetic corpus, over several seeds).
DEFAULT_SGD_LR = {"lstm": 20.0, "gru": 10.0, "rnn": 5.0, "rnn-relu": 3.0}
DEFAULT_ADAM_LR = 0.002  # every cell
DEFAULT_WARMUP = 300  # Adam's warm-up, in updates, when an epoch has more
ARCHITECTURE_CHECKED = ("cell", "activation")  # ModelConfig checks these, in model_config()
POSITIVE_INTS = ("min_count", "layers", "emb", "hidden", "bptt", "patience", "checkpoint_every",
                 "eval_batch_size")  # fmt: skip
# Sequences per update when --batch-size is not given: the most, and the fewest a small corpus
# may go down to so that an epoch of BPTT windows still has about AUTO_MIN_UPDATES updates
# (fewer below 4 × bptt × 50 tokens; a sentence-batched task's count differs a little).
AUTO_BATCH, AUTO_MIN_UPDATES = (20, 4), 50
# Epochs when --epochs is not given: enough for this many updates, within these bounds. A few
# thousand updates train a small corpus (6k tokens: 40 updates an epoch) as well as a large
# one; PTB (1,328 updates an epoch) gets the lower bound (bench/RESULTS.md, "Training defaults").
AUTO_EPOCH_UPDATES, AUTO_EPOCHS = 3000, (10, 50)


T = TypeVar("T")
OPTIMIZERS = ("sgd", "adam")
CONTEXTS = ("stream", "sentence")


def option(
    default: T,
    help: str,
    group: str,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    show_default: bool = True,
) -> T:
    """A ``TrainConfig`` field with what ``nextword train --help`` says of it: the help text,
    its group of options, its allowed values (checked by ``validate`` too) and a metavar."""
    metadata = {"help": help, "group": group, "choices": choices, "metavar": metavar,
                "show_default": show_default}  # fmt: skip
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run; each field is a ``nextword train`` option
    (``--valid-fraction`` for ``valid_fraction``), and its help is the text below."""

    # data
    train: str | None = option(None, "training corpus (UTF-8 text)", "data")
    valid: str | None = option(
        None, "validation corpus (default: hold out the end of train)", "data", show_default=False
    )
    test: str | None = option(None, "test corpus, scored with the best model at the end", "data")
    out: str | None = option(
        None, "output directory: the checkpoint, metrics.jsonl, training.png", "data"
    )
    valid_fraction: float = option(0.1, "held-out share of train when there is no --valid", "data")
    split: str = option(
        "lines", "one sentence per line, or split prose into sentences", "data", SPLITS
    )
    tokenizer: str = option("whitespace", "how text is cut into tokens", "data", TOKENIZERS)
    lowercase: bool = option(False, "lowercase the text before tokenising", "data")
    normalize: str = option(
        "none",
        "spoken = rewrite the text as recognisers write it, for training and for every request "
        "to the model: lower case, no punctuation, apostrophes inside words kept, hyphens split "
        "words, numbers as written",
        "data",
        NORMALIZATIONS,
    )
    min_count: int = option(
        2,
        "words seen fewer times become <unk> (2: the words seen once teach the model how often "
        "an unknown word comes)",
        "data",
    )
    max_vocab: int | None = option(None, "at most this many ids, specials included", "data")
    # architecture
    cell: str = option("lstm", "recurrent cell", "architecture", CELLS)
    activation: str = option("tanh", "for --cell rnn", "architecture", ACTIVATIONS)
    layers: int = option(2, "stacked recurrent layers", "architecture")
    emb: int = option(200, "embedding size", "architecture")
    hidden: int = option(200, "hidden size", "architecture")
    dropout: float = option(0.3, "drop probability on non-recurrent connections", "architecture")
    tie_weights: bool | None = option(
        None,
        "share the embedding and output matrices (needs --emb == --hidden; default: shared "
        "when they are equal, left to right)",
        "architecture",
        show_default=False,
    )
    bidirectional: bool = option(
        False,
        "a gap-filling model reading both sides of a word (served by /v1/fill), trained on "
        "whole sentences",
        "architecture",
    )
    softmax: str = option(
        "full",
        "the output layer: one softmax over the vocabulary, or class-factored "
        "(P(class) · P(word | class), both exact; a target costs about 2√V rows, not V)",
        "architecture",
        SOFTMAXES,
    )
    classes: int | None = option(
        None,
        "with --softmax class: how many word classes (default √V), cut by frequency",
        "architecture",
        show_default=False,
    )
    shortlist: int = option(
        0,
        "with --softmax class: the most frequent words that get a class of their own (the "
        "adaptive softmax's head); --classes then bands the rest",
        "architecture",
    )
    # optimisation
    context: str = option(
        "stream",
        "what a left-to-right model reads per update: stream = truncated-BPTT windows of the "
        "running text, the state carried across sentences (the Penn Treebank convention); "
        "sentence = whole sentences in shuffled batches, each from a zero state, as /v1/score and "
        "/v1/rerank read them (the best model is then chosen on that isolated-sentence figure)",
        "optimisation",
        CONTEXTS,
    )
    reset_prob: float = option(
        1.0,
        "with --context sentence: the chance that a sentence starts from a zero state; "
        "otherwise it continues the sentence before it, the state carried (0.5: half of the "
        "sentences start afresh, half use their context)",
        "optimisation",
    )
    optimizer: str = option("sgd", "optimiser", "optimisation", OPTIMIZERS)
    lr: float | None = option(
        None,
        "learning rate (sgd: 20 for lstm, 10 gru, 5 rnn, 3 relu rnn; adam: 0.002)",
        "optimisation",
        show_default=False,
    )
    warmup: int | None = option(
        None,
        "adam: updates over which the learning rate rises linearly to --lr (default: one "
        "epoch, at most 300; 0 off)",
        "optimisation",
        show_default=False,
    )
    lr_decay: float = option(
        0.25, "lr factor after an epoch without validation improvement", "optimisation"
    )
    clip: float = option(0.25, "maximum global gradient norm", "optimisation")
    batch_size: int | None = option(
        None,
        "sequences per update (default: 20, or for a small corpus fewer, down to 4: its tokens "
        "/ (bptt × 50), so that an epoch of windows has about 50 updates or more)",
        "optimisation",
        show_default=False,
    )
    bptt: int = option(35, "steps per truncated-BPTT window", "optimisation")
    epochs: int | None = option(
        None,
        "passes over the training corpus (default: enough for 3,000 updates, at least 10 and "
        "at most 50; early stopping may end the run sooner)",
        "optimisation",
        show_default=False,
    )
    patience: int = option(3, "stop after this many epochs without improvement", "optimisation")
    seed: int = option(0, "initialisation, dropout and shuffling", "optimisation")
    checkpoint_every: int = option(
        200, "windows between resume snapshots (at most this much work lost)", "optimisation"
    )
    eval_batch_size: int = option(10, "columns of the validation stream", "optimisation")
    max_recurrent_norm: float | None = option(
        None,
        "keep the spectral norm of every recurrent matrix at most this (default: 1 for --cell "
        "rnn --activation relu, whose state could otherwise overflow on long text; 0 off)",
        "optimisation",
        show_default=False,
    )
    max_recoveries: int = option(
        4,
        "when training diverges, roll back to the last snapshot and halve the learning rate, at "
        "most this many times; 0 stops at once",
        "optimisation",
    )
    # run
    progress_every: float = option(
        15.0,
        "a progress line this often when stderr is no terminal (Docker, Kubernetes); 0 never",
        "run",
        metavar="SECONDS",
    )

    def __post_init__(self) -> None:
        if self.tie_weights is None:  # shared where they can be: a tied model learns faster
            self.tie_weights = self.emb == self.hidden and not self.bidirectional
        self.validate()

    def validate(self) -> None:
        self.check_types()
        for f in fields(self):
            allowed, value = f.metadata["choices"], getattr(self, f.name)
            if allowed and f.name not in ARCHITECTURE_CHECKED and value not in allowed:
                raise ValueError(f"{f.name} must be one of {allowed}, got {value!r}")
        for name in POSITIVE_INTS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.classes is not None and (self.classes < 1 or self.softmax != "class"):
            raise ValueError(f"classes must be a positive integer with --softmax class, got "
                             f"{self.classes!r}")  # fmt: skip
        if self.shortlist < 0 or (self.shortlist and self.softmax != "class"):
            raise ValueError(f"shortlist must be 0 or more, and with --softmax class only, got "
                             f"{self.shortlist!r}")  # fmt: skip
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("max_recurrent_norm", "max_recoveries", "progress_every", "warmup"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)!r}")
        if not 0 < self.reset_prob <= 1:
            raise ValueError(f"reset_prob must be in (0, 1], got {self.reset_prob}")
        if self.reset_prob != 1 and (self.context != "sentence" or self.bidirectional):
            raise ValueError("reset_prob applies to --context sentence (left to right) only")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be between 0 and 1, got {self.valid_fraction}")
        if self.warmup and self.optimizer != "adam":
            raise ValueError("warmup is for --optimizer adam; SGD takes none")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        self.model_config(vocab_size=3)  # architecture errors show now, before the corpus is read

    def check_types(self) -> None:
        """Each option has its annotated type (bool is no int; numbers are finite), so a config
        file or a saved run with ``layers = true`` or ``lr = "x"`` fails here, naming the option."""
        for f in fields(self):
            value, allowed = getattr(self, f.name), str(f.type).replace(" ", "").split("|")
            if value is None and "None" in allowed:
                continue
            if not any(_has_type(value, name) for name in allowed):
                raise ValueError(f"{f.name} must be of type {f.type}, got {value!r}")

    def model_config(self, vocab_size: int, counts: list[int] | None = None) -> ModelConfig:
        """The network's architecture for a vocabulary of ``vocab_size`` words; a class-factored
        output cuts its classes from the words' ``counts`` (all equal when not given)."""
        bounds: tuple[int, ...] = ()
        short = 0
        if self.softmax == "class":
            layout = WordClasses.cut(counts or [1] * vocab_size, self.classes, self.shortlist)
            bounds, short = layout.bounds, layout.shortlist
        return ModelConfig(
            vocab_size=vocab_size,
            cell=self.cell,
            activation=self.activation,
            num_layers=self.layers,
            embed_size=self.emb,
            hidden_size=self.hidden,
            dropout=self.dropout,
            tie_weights=bool(self.tie_weights),
            bidirectional=self.bidirectional,
            softmax=self.softmax,
            class_bounds=bounds,
            class_shortlist=short,
        )

    @property
    def learning_rate(self) -> float:
        """--lr, or the default for this optimiser and cell (``DEFAULT_SGD_LR``)."""
        if self.lr is not None:
            return self.lr
        if self.optimizer == "adam":
            return DEFAULT_ADAM_LR
        relu = self.cell == "rnn" and self.activation == "relu"
        return DEFAULT_SGD_LR["rnn-relu" if relu else self.cell]

    def with_epochs(self, updates_per_epoch: int) -> TrainConfig:
        """This configuration with ``epochs`` set: as given, or enough for
        ``AUTO_EPOCH_UPDATES`` updates within ``AUTO_EPOCHS``."""
        if self.epochs is not None:
            return self
        low, high = AUTO_EPOCHS
        wanted = -(-AUTO_EPOCH_UPDATES // max(updates_per_epoch, 1))
        return replace(self, epochs=min(max(wanted, low), high))

    def with_batch_size(self, tokens: int) -> TrainConfig:
        """This configuration with ``batch_size`` set: as given, or ``AUTO_BATCH[0]`` unless an
        epoch of ``tokens`` in BPTT windows would then have fewer than ``AUTO_MIN_UPDATES``
        updates, down to ``AUTO_BATCH[1]``."""
        if self.batch_size is not None:
            return self
        most, fewest = AUTO_BATCH
        fitting = tokens // (self.bptt * AUTO_MIN_UPDATES)
        return replace(self, batch_size=min(most, max(fewest, fitting)))

    @property
    def sequences(self) -> int:
        """``batch_size``, once ``with_batch_size`` has set it (``prepare_corpus`` does)."""
        if self.batch_size is None:
            raise ValueError("batch_size is not set yet: call with_batch_size with the tokens")
        return self.batch_size

    @property
    def planned_epochs(self) -> int:
        """``epochs``, once ``with_epochs`` has set it (the trainer does before the first)."""
        if self.epochs is None:
            raise ValueError("epochs is not set yet: call with_epochs with the corpus's updates")
        return self.epochs

    def warmup_updates(self, updates_per_epoch: int) -> int:
        """--warmup, or Adam's default: one epoch of updates, at most ``DEFAULT_WARMUP``."""
        if self.warmup is not None:
            return self.warmup
        return min(updates_per_epoch, DEFAULT_WARMUP) if self.optimizer == "adam" else 0

    @property
    def recurrent_norm_cap(self) -> float:
        """The bound on ‖Wh‖₂ in force (0: none): ``max_recurrent_norm`` or the cell's default."""
        if self.max_recurrent_norm is not None:
            return self.max_recurrent_norm
        return 1.0 if self.cell == "rnn" and self.activation == "relu" else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown options {unknown}")
        return cls(**data)


def _has_type(value: Any, name: str) -> bool:
    """Whether ``value`` is of the annotated type ``name`` (str, int, float or bool)."""
    if name == "bool":
        return isinstance(value, bool)
    if name == "int":
        return is_int(value)
    if name == "float":
        return is_number(value, finite=True)
    return name == "str" and isinstance(value, str)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a TOML or JSON file; relative paths in it are relative to the file."""
    path = Path(PRESETS.get(str(path), path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: invalid {path.suffix.lstrip('.') or 'TOML'} ({e})") from None
    for key in PATH_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = str((path.parent / data[key]).resolve())
    return data


def merge(overrides: dict[str, Any], config_file: str | None = None) -> TrainConfig:
    """Defaults, then the config file, then the explicitly given command-line options."""
    data = read_config_file(config_file) if config_file else {}
    data.update(overrides)
    return TrainConfig.from_dict(data, where=str(config_file or "options"))
