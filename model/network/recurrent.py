"""The recurrent language model: embedding → stacked recurrent layers → softmax over the vocabulary.

    x_t = E[w_t]                                 embedding lookup          (T, N, D)
    s_t^l = cell(s_t^{l-1}, s_{t-1}^l)           layer l = 1..L            (T, N, H)
    o_t = softmax(V s_t^L + b)                   next-word distribution    (T, N, V)

with inverted dropout on the non-recurrent connections (after the embedding, between layers and
before the output) during training only. Shape letters: T time, N batch, D embedding size,
H hidden size, V vocabulary size, L layers. See docs/model.md for the equations of each part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, get_type_hints

import numpy as np

from model.network.cells import State, get_cell
from model.network.class_softmax import (
    WordClasses,
    class_log_probs,
    class_log_probs_at,
    class_softmax_loss,
)
from model.network.init import init_cell, init_embedding
from model.network.layers import (
    Grad,
    RowSparse,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    log_softmax,
    log_softmax_at,
    softmax_output_loss,
    temporal_affine_forward,
    times_rows,
)
from model.values import show

OUTPUT_CHUNK = 1 << 22  # logits formed at a time by target_log_probs (16 MB of float32)

NetworkState = list[State]  # one cell state per layer
CELLS, ACTIVATIONS = ("rnn", "lstm", "gru"), ("tanh", "relu")
SOFTMAXES = ("full", "class")  # the output layer: one softmax over V, or class-factored
MAX_SIZE = 2**31 - 1
# The range of each size. The upper bounds are far beyond any real model; they exist because a
# config read from a damaged file with num_layers 10**12 would loop over the layers, not fail.
_SIZE_RANGES = {
    "vocab_size": (3, MAX_SIZE),  # at least <unk>, <s>, </s>
    "num_layers": (1, 1000),
    "embed_size": (1, MAX_SIZE),
    "hidden_size": (1, MAX_SIZE),
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an RNNLM; stored in the checkpoint so the model can be rebuilt from it."""

    vocab_size: int  # V, including <unk>, <s>, </s>
    cell: str = "lstm"  # rnn | lstm | gru
    activation: str = "tanh"  # tanh | relu; used by the rnn cell only
    num_layers: int = 2  # L stacked recurrent layers
    embed_size: int = 200  # D
    hidden_size: int = 200  # H
    dropout: float = 0.0  # drop probability on non-recurrent connections, training only
    tie_weights: bool = False  # output matrix = embedding matrix (needs D == H)
    bidirectional: bool = False  # a gap-filling model reading both sides (network.bidirectional)
    softmax: str = "full"  # full | class (network.class_softmax)
    class_bounds: tuple[int, ...] = ()  # softmax "class": class c = ids bounds[c]:bounds[c+1]
    class_shortlist: int = 0  # softmax "class": words 0 … n-1 are classes of their own

    def __post_init__(self) -> None:
        for name, allowed in (("cell", CELLS), ("activation", ACTIVATIONS), ("softmax", SOFTMAXES)):
            if getattr(self, name) not in allowed:  # activation too: unused by lstm/gru, still data
                raise ValueError(f"unknown {name} {show(getattr(self, name))}: expected {allowed}")
        for name, (low, high) in _SIZE_RANGES.items():
            value = int(getattr(self, name))
            if not low <= value <= high:
                bound = f"at least {low}" if value < low else f"at most {high}"
                raise ValueError(f"{name} must be {bound}, got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.bidirectional:
            raise ValueError("tie_weights is not supported for bidirectional models")
        if self.softmax == "class":
            classes = WordClasses(tuple(self.class_bounds), self.class_shortlist)  # checks them
            if classes.vocab_size != self.vocab_size:
                raise ValueError(
                    f"class_bounds must end at vocab_size {self.vocab_size}, "
                    f"got {classes.vocab_size}"
                )
        elif self.class_bounds or self.class_shortlist:
            raise ValueError("class_bounds and class_shortlist are for softmax 'class' only")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError(
                f"tie_weights needs embed_size == hidden_size, got {self.embed_size} and "
                f"{self.hidden_size}"
            )

    @property
    def classes(self) -> WordClasses | None:
        """The word classes of a class-factored output layer; None for a full softmax."""
        if self.softmax != "class":
            return None
        return WordClasses(tuple(self.class_bounds), self.class_shortlist)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_bounds"] = list(self.class_bounds)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Rebuild a config from ``to_dict`` output (a checkpoint's "model" section).

        JSON types are checked here rather than in ``__post_init__``: JSON is where 16.0, "16" or
        true can stand for a size, and each would fail later with a message naming nothing.
        A missing field takes its default (older checkpoints lack ``bidirectional``,
        ``softmax`` and ``class_shortlist``: they load as the model they are).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"must be an object, got {type(data).__name__}")
        types = get_type_hints(cls)
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        if "vocab_size" not in data:
            raise ValueError("vocab_size is missing")
        return cls(**{name: _json_field(name, value, types[name]) for name, value in data.items()})


def _json_field(name: str, value: Any, kind: Any) -> Any:
    """``value`` if it is a JSON value of type ``kind`` (bool is not int; an int is a float; a
    tuple of ints is a list of them)."""
    if kind == tuple[int, ...]:
        if not isinstance(value, list | tuple) or not all(type(v) is int for v in value):
            raise ValueError(f"{name} must be a list of integers, got {show(value)}")
        return tuple(value)
    ok = type(value) is kind or (kind is float and type(value) is int)
    if not ok:
        raise ValueError(f"{name} must be {_JSON_KINDS[kind]}, got {show(value)}")
    return float(value) if kind is float else value


_JSON_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def check_params(params: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]) -> None:
    """Raise ValueError unless ``params`` has exactly the expected names and shapes."""
    if set(params) != set(expected):
        missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
        raise ValueError(
            f"parameter names do not match the config: missing {missing}, extra {extra}"
        )
    for name, shape in expected.items():
        if params[name].shape != shape:
            raise ValueError(f"parameter {name} has shape {params[name].shape}, expected {shape}")


class RecurrentStack:
    """The reading part of a network: embedding → L recurrent layers, dropout in between.

    Its parameters live in the owner's flat dict under ``prefix``: ``{prefix}embedding.W`` (V, D)
    and ``{prefix}rnn.{l}.Wx`` / ``Wh`` / ``b`` (/ ``bhn``). A left-to-right model has one stack
    (prefix ""); a bidirectional one has two ("fwd.", "bwd.").
    """

    def __init__(self, config: ModelConfig, prefix: str = "") -> None:
        self.config, self.prefix = config, prefix
        self.cell = get_cell(config.cell, config.activation)

    def layer_input_size(self, layer: int) -> int:
        return self.config.embed_size if layer == 0 else self.config.hidden_size

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        c, p = self.config, self.prefix
        G = self.cell.gates * c.hidden_size
        shapes: dict[str, tuple[int, ...]] = {f"{p}embedding.W": (c.vocab_size, c.embed_size)}
        for layer in range(c.num_layers):
            shapes[f"{p}rnn.{layer}.Wx"] = (self.layer_input_size(layer), G)
            shapes[f"{p}rnn.{layer}.Wh"] = (c.hidden_size, G)
            shapes[f"{p}rnn.{layer}.b"] = (G,)
            if "bhn" in self.cell.param_names:
                shapes[f"{p}rnn.{layer}.bhn"] = (c.hidden_size,)
        return shapes

    def initial_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c, p = self.config, self.prefix
        params = {f"{p}embedding.W": init_embedding(c.vocab_size, c.embed_size, rng)}
        for layer in range(c.num_layers):
            D = self.layer_input_size(layer)
            cell_params = init_cell(c.cell, c.activation, D, c.hidden_size, rng)
            params.update({f"{p}rnn.{layer}.{k}": v for k, v in cell_params.items()})
        return params

    def layer_params(self, params: dict[str, np.ndarray], layer: int) -> dict[str, np.ndarray]:
        return {k: params[f"{self.prefix}rnn.{layer}.{k}"] for k in self.cell.param_names}

    def init_state(self, batch_size: int, dtype: np.dtype) -> NetworkState:
        """Zero state for ``batch_size`` sequences: per layer a tuple of (N, H) arrays."""
        shape = (batch_size, self.config.hidden_size)
        n = self.cell.num_states
        return [
            tuple(np.zeros(shape, dtype=dtype) for _ in range(n))
            for _ in range(self.config.num_layers)
        ]

    def forward(
        self,
        params: dict[str, np.ndarray],
        ids: np.ndarray,
        state: NetworkState,
        rng: np.random.Generator | None = None,
        keep_cache: bool = True,
    ) -> tuple[np.ndarray, NetworkState, Any]:
        """Read ids (T, N) from ``state``; ``rng`` switches dropout on (training).

        Returns the top layer's outputs (T, N, H), the final state per layer, and the cache for
        ``backward`` (only with ``keep_cache``; inference passes False and saves the memory).
        """
        p = self.config.dropout
        x, emb_cache = embedding_forward(ids, params[f"{self.prefix}embedding.W"])  # (T, N, D)
        x, mask = dropout_forward(x, p, rng)
        masks, layer_caches, final_state = [mask], [], []
        for layer in range(self.config.num_layers):
            x, layer_state, layer_cache = self.cell.forward(
                x, state[layer], self.layer_params(params, layer), keep_cache
            )
            x, mask = dropout_forward(x, p, rng)  # (T, N, H)
            masks.append(mask)
            layer_caches.append(layer_cache)
            final_state.append(layer_state)
        return x, final_state, (emb_cache, masks, layer_caches)

    def backward(self, dhidden: np.ndarray, cache: Any) -> dict[str, Grad]:
        """Gradients of the stack's parameters from d(top outputs) (T, N, H).

        The state carried in from a previous window is a constant (truncated BPTT): no gradient
        flows into it.
        """
        emb_cache, masks, layer_caches = cache
        grads: dict[str, Grad] = {}
        dx = dhidden
        for layer in reversed(range(self.config.num_layers)):
            dx = dropout_backward(dx, masks[layer + 1])
            dx, _, layer_grads = self.cell.backward(dx, None, layer_caches[layer])
            grads.update({f"{self.prefix}rnn.{layer}.{k}": g for k, g in layer_grads.items()})
        dx = dropout_backward(dx, masks[0])
        grads[f"{self.prefix}embedding.W"] = embedding_backward(dx, emb_cache)
        return grads


class RNNLM:
    """The left-to-right language model: a ``RecurrentStack`` and a softmax output layer.

    Parameters live in ``self.params``, a flat dict whose keys are also the tensor names in the
    checkpoint: ``embedding.W`` (V, D), ``rnn.{l}.Wx`` / ``Wh`` / ``b`` (/ ``bhn`` for GRU),
    ``output.W`` (V, H) unless tied, ``output.b`` (V,).
    """

    def __init__(
        self,
        config: ModelConfig,
        params: dict[str, np.ndarray] | None = None,
        *,
        seed: int = 0,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        if config.bidirectional:
            raise ValueError(
                "a bidirectional config builds a BiRNNLM (network.bidirectional), not an RNNLM"
            )
        self.config = config
        self.classes = config.classes  # None: a full softmax
        self.stack = RecurrentStack(config)
        self.cell = self.stack.cell
        if params is None:
            params = self._initial_params(np.random.default_rng(seed))
        check_params(params, self.param_shapes())
        self.params = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}
        # the state a sentence starts from when read on its own (None: zero); not a parameter:
        # set after training (model/inference/start_state.py), kept in the checkpoint
        self.start: NetworkState | None = None

    # ------------------------------------------------------------ structure
    @property
    def dtype(self) -> np.dtype:
        return self.params["output.b"].dtype

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name → shape of every parameter this config needs."""
        c = self.config
        shapes = self.stack.param_shapes()
        if not c.tie_weights:
            shapes["output.W"] = (c.vocab_size, c.hidden_size)
        shapes["output.b"] = (c.vocab_size,)
        if self.classes is not None:
            shapes["output.class.W"] = (self.classes.num_bands, c.hidden_size)
            shapes["output.class.b"] = (self.classes.num_bands,)
        return shapes

    def _initial_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        params = self.stack.initial_params(rng)
        if not c.tie_weights:
            params["output.W"] = init_embedding(c.vocab_size, c.hidden_size, rng)
        params["output.b"] = np.zeros(c.vocab_size)
        if self.classes is not None:
            params["output.class.W"] = init_embedding(self.classes.num_bands, c.hidden_size, rng)
            params["output.class.b"] = np.zeros(self.classes.num_bands)
        return params

    @property
    def output_weight(self) -> np.ndarray:
        """The (V, H) output matrix: the embedding matrix itself when weights are tied."""
        return self.params["embedding.W" if self.config.tie_weights else "output.W"]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.params.values())

    def init_state(self, batch_size: int) -> NetworkState:
        """Zero state for ``batch_size`` sequences: per layer a tuple of (N, H) arrays."""
        return self.stack.init_state(batch_size, self.dtype)

    def start_state(self, batch_size: int) -> NetworkState:
        """The state before ``<s>`` of a sentence read on its own, for ``batch_size`` sequences:
        ``start`` repeated when set, else zero (what the service and isolated evaluation use)."""
        if self.start is None:
            return self.init_state(batch_size)
        return repeat_state(self.start, batch_size)

    # ------------------------------------------------------------ forward / backward
    def forward(
        self,
        ids: np.ndarray,
        state: NetworkState,
        rng: np.random.Generator | None = None,
        keep_cache: bool = True,
    ) -> tuple[np.ndarray, NetworkState, Any]:
        """Read ids (T, N) from ``state``: top outputs, final state, cache (``RecurrentStack``)."""
        return self.stack.forward(self.params, ids, state, rng, keep_cache)

    def backward(self, dhidden: np.ndarray, cache: Any) -> dict[str, Grad]:
        """Gradients of every recurrent and embedding parameter from d(top outputs) (T, N, H)."""
        return self.stack.backward(dhidden, cache)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Unnormalised next-token scores (T, N, V) from top-layer outputs (T, N, H) of a full
        softmax (a class-factored output has two softmaxes: ``log_probs``)."""
        if self.classes is not None:
            raise ValueError("a class-factored output layer has no single logits vector")
        return temporal_affine_forward(hidden, self.output_weight, self.params["output.b"])[0]

    def loss_and_grads(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        mask: np.ndarray | None,
        state: NetworkState,
        rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, Grad], NetworkState]:
        """Mean cross-entropy of one truncated-BPTT window, its gradients and the carried state.

        - inputs, targets: ids, shape (T, N); mask: (T, N) weights of the counted targets or None.
        Returns (loss in nats per token, grads keyed like ``params``, final state). The gradient
        of an untied embedding is a ``RowSparse`` (only the rows of the words read).
        """
        hidden, final_state, cache = self.forward(inputs, state, rng)
        class_grads: dict[str, Grad] = {}
        if self.classes is None:
            loss, dhidden, dW_out, db_out = softmax_output_loss(
                hidden, self.output_weight, self.params["output.b"], targets, mask
            )
        else:
            loss, dhidden, out = class_softmax_loss(
                hidden, self.output_weight, self.params["output.b"],
                self.params["output.class.W"], self.params["output.class.b"],
                self.classes, targets, mask,
            )  # fmt: skip
            dW_out, db_out = out["W"], out["b"]
            class_grads = {"output.class.W": out["Wc"], "output.class.b": out["bc"]}
        grads = self.backward(dhidden, cache)
        grads.update(class_grads)
        if self.config.tie_weights:  # one matrix used twice: the two gradients add
            emb = grads["embedding.W"]
            assert isinstance(emb, RowSparse)
            dW_out[emb.ids] += emb.rows
            grads["embedding.W"] = dW_out
        else:
            grads["output.W"] = dW_out
        grads["output.b"] = db_out
        return loss, grads, final_state

    def log_probs(self, ids: np.ndarray, state: NetworkState) -> tuple[np.ndarray, NetworkState]:
        """Inference: log P(next token) after each input, shape (T, N, V), and the final state."""
        hidden, final_state, _ = self.forward(ids, state, keep_cache=False)
        return self.output_log_probs(hidden), final_state

    def target_log_probs(
        self, ids: np.ndarray, targets: np.ndarray, state: NetworkState
    ) -> tuple[np.ndarray, NetworkState]:
        """Inference: log P(targets[t, n] | ids[:t+1, n]), shape (T, N), and the final state.

        What evaluation needs, without the (T, N, V) distribution: a full softmax forms each
        row's normaliser and picks the target (``log_softmax_at``); a class-factored one pays
        for the class softmax and the target's own class only (``class_log_probs_at``)."""
        hidden, final_state, _ = self.forward(ids, state, keep_cache=False)
        flat, picked = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
        rows = max(64, OUTPUT_CHUNK // self.config.vocab_size)  # the logits never all at once
        parts = []
        for lo in range(0, len(picked), rows):
            x, y = flat[lo : lo + rows], picked[lo : lo + rows]
            if self.classes is None:
                logits = times_rows(x, self.output_weight) + self.params["output.b"]
                parts.append(log_softmax_at(logits, np.arange(len(y)), y)[0])
            else:
                parts.append(class_log_probs_at(
                    x, y, self.output_weight, self.params["output.b"],
                    self.params["output.class.W"], self.params["output.class.b"], self.classes,
                ))  # fmt: skip
        lp = np.concatenate(parts) if parts else np.zeros(0, dtype=hidden.dtype)
        return lp.reshape(targets.shape), final_state

    def output_log_probs(self, hidden: np.ndarray) -> np.ndarray:
        """log P(next token) over the vocabulary, (..., V), from top outputs (..., H)."""
        if self.classes is None:
            return log_softmax(self.logits(hidden))
        return class_log_probs(
            hidden, self.output_weight, self.params["output.b"],
            self.params["output.class.W"], self.params["output.class.b"], self.classes,
        )  # fmt: skip


def repeat_state(state: NetworkState, n: int) -> NetworkState:
    """A batch-1 state repeated for ``n`` sequences."""
    return [tuple(np.repeat(t, n, axis=0) for t in layer) for layer in state]
