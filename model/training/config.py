"""Training configuration: defaults < a TOML/JSON file < command-line options.

The effective configuration is stored in the checkpoint, so a run can be repeated from it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from model.network.recurrent import ModelConfig
from model.text.corpus import SPLITS
from model.text.tokenize import TOKENIZERS
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
POSITIVE_INTS = ("min_count", "layers", "emb", "hidden", "batch_size", "bptt", "epochs",
                 "patience", "checkpoint_every", "eval_batch_size")  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that defines a training run (see ``nextword train --help``)."""

    train: str | None = None  # training corpus, UTF-8 text
    valid: str | None = None  # validation corpus; None holds out the end of train
    test: str | None = None  # optional test corpus, scored with the best model at the end
    out: str | None = None  # output directory: the checkpoint the service loads
    valid_fraction: float = 0.1  # share of train sentences held out when there is no valid
    split: str = "lines"  # lines | sentences: how text is cut into sentences
    tokenizer: str = "whitespace"  # whitespace | words | chars
    lowercase: bool = False
    min_count: int = 1  # words seen fewer times become <unk>
    max_vocab: int | None = None  # at most this many ids, specials included
    cell: str = "lstm"  # rnn | lstm | gru
    activation: str = "tanh"  # tanh | relu, for rnn
    layers: int = 2
    emb: int = 200
    hidden: int = 200
    dropout: float = 0.0
    tie_weights: bool = False
    bidirectional: bool = (
        False  # a gap-filling model (reads both sides), trained on whole sentences
    )
    optimizer: str = "sgd"  # sgd | adam
    lr: float | None = None  # None: sgd 20 (gru 10, rnn 5, relu rnn 3), adam 0.002
    lr_decay: float = 0.25  # lr *= lr_decay after an epoch without validation improvement
    clip: float = 0.25  # maximum global gradient norm
    batch_size: int = 20
    bptt: int = 35  # steps of backpropagation through time per window
    epochs: int = 10
    patience: int = 3  # stop after this many epochs without improvement
    seed: int = 0
    checkpoint_every: int = 200  # windows between resume snapshots (at most this much work lost)
    eval_batch_size: int = 10
    # Largest spectral norm of each recurrent matrix Wh, enforced after every update; None: 1 for
    # a ReLU RNN (its state then cannot grow exponentially along a long stream), 0 (off) otherwise.
    max_recurrent_norm: float | None = None
    max_recoveries: int = 4  # divergences survived by rolling back and halving the learning rate
    progress_every: float = 15.0  # seconds between progress lines when stderr is no terminal; 0 off

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        self.check_types()
        choices = {"split": SPLITS, "tokenizer": TOKENIZERS, "optimizer": ("sgd", "adam")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in POSITIVE_INTS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("max_recurrent_norm", "max_recoveries", "progress_every"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)!r}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be between 0 and 1, got {self.valid_fraction}")
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

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            cell=self.cell,
            activation=self.activation,
            num_layers=self.layers,
            embed_size=self.emb,
            hidden_size=self.hidden,
            dropout=self.dropout,
            tie_weights=self.tie_weights,
            bidirectional=self.bidirectional,
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
