"""What the two recurrent kinds share: a network, its output layer, and its self-check."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from model.inference.language_model import LanguageModel
from model.network.class_softmax import WordClasses, class_log_probs_at, head_log_norms
from model.network.layers import exp_rows, times_rows
from model.network.recurrent import OUTPUT_CHUNK, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary


class Network(Protocol):
    """What a checkpoint stores and the output layer reads: RNNLM and BiRNNLM both are one."""

    config: ModelConfig
    params: dict[str, np.ndarray]
    classes: WordClasses | None  # a class-factored output's classes, made once

    @property
    def dtype(self) -> np.dtype[Any]: ...

    @property
    def output_weight(self) -> np.ndarray: ...

    def num_parameters(self) -> int: ...


N = TypeVar("N", bound=Network)


class NetworkLM(LanguageModel, Generic[N]):
    """A language model computed by a network ``net`` with a full-softmax output layer."""

    def __init__(
        self,
        net: N,
        vocab: Vocabulary,
        tokenizer: Tokenizer,
        metadata: dict[str, Any] | None = None,
        checksum: str | None = None,
    ) -> None:
        if net.config.vocab_size != len(vocab):
            raise ValueError(
                f"network has {net.config.vocab_size} outputs, vocabulary {len(vocab)} tokens"
            )
        super().__init__(vocab, tokenizer, metadata, checksum)
        self.net = net

    def architecture(self) -> dict[str, Any]:
        return self.net.config.to_dict()

    def num_parameters(self) -> int:
        return self.net.num_parameters()

    def position_cost(self) -> float:
        """H × (output rows + 8 H per layer): the output layer's rows (all V, or a class
        softmax's head and one band) and each layer's step (an LSTM's 4H gates from 2H inputs)."""
        c = self.net.config
        classes = self.net.classes
        rows = (
            c.vocab_size
            if classes is None
            else classes.num_classes + c.vocab_size / max(classes.num_classes, 1)
        )
        return float(c.hidden_size * (rows + 8 * c.num_layers * c.hidden_size))

    def check_parameters(self) -> None:
        for name, value in self.net.params.items():
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise FloatingPointError(f"parameter {name!r} has {bad} non-finite values")

    # ------------------------------------------------------------ the output layer
    def output_rows(self, hidden: np.ndarray) -> np.ndarray:
        """Logits (m, V) of top-layer outputs hidden (m, H): ``h Wᵀ + b`` (``times_rows``)."""
        logits = times_rows(hidden, self.net.output_weight)
        logits += self.net.params["output.b"]  # in place: no second (m, V) array
        return logits

    def log_probs_at(self, hidden: np.ndarray, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """log P(tokens[k]) under the distribution of output row rows[k] of hidden (M, H)."""
        return self.log_probs_given_norms(hidden[rows], tokens, self.log_normalisers(hidden)[rows])

    def log_normalisers(self, hidden: np.ndarray) -> np.ndarray:
        """``log Σ_j exp(logit_j)`` of each top output hidden (M, H): (M,), float64.

        One output product per chunk of rows; the (M, V) log-probabilities are never formed.
        A class-factored output's is its class softmax's (``head_log_norms``): what every
        token after that output shares, the within-class normaliser being each class's own.
        """
        norms = np.empty(len(hidden), dtype=np.float64)
        rows = max(64, OUTPUT_CHUNK // self.net.config.vocab_size)  # 16 MB of logits at a time
        for start in range(0, len(hidden), rows):
            chunk = hidden[start : start + rows]
            norms[start : start + len(chunk)] = self._log_norms(chunk)
        return norms

    def _log_norms(self, hidden: np.ndarray) -> np.ndarray:
        """One chunk of ``log_normalisers``: the class head's product, or the whole (m, V) one."""
        classes = self.net.classes
        if classes is not None:
            p = self.net.params
            W, Wc = self.net.output_weight, p["output.class.W"]
            return head_log_norms(hidden, W, p["output.b"], Wc, p["output.class.b"], classes)
        c, total = exp_rows(self.output_rows(hidden), blas_sum=True)  # (m, V) logits
        norms: np.ndarray = c + np.log(total.astype(np.float64))
        return norms

    def log_probs_given_norms(
        self, hidden: np.ndarray, tokens: np.ndarray, norms: np.ndarray
    ) -> np.ndarray:
        """log P(tokens[k]) after top output hidden[k] (K, H) whose log-normaliser is norms[k]:
        one weight row and a dot product per token, not the whole output layer.

        The logit is summed in float64 (more exact than the float32 output product, which only
        the normaliser comes from), so a token scores the same number whether its normaliser
        was computed now or kept from an earlier call. A class-factored output adds its token's
        class's rows (``class_log_probs_at``, ``norms`` being the class softmax's).
        """
        classes = self.net.classes  # made once with the network
        if classes is not None:
            p = self.net.params
            W, Wc = self.net.output_weight, p["output.class.W"]
            return class_log_probs_at(
                hidden, tokens, W, p["output.b"], Wc, p["output.class.b"], classes, norms
            )
        weights = self.net.output_weight[tokens].astype(np.float64)  # (K, H)
        logits: np.ndarray = np.einsum("kh,kh->k", weights, hidden.astype(np.float64))
        logits += self.net.params["output.b"][tokens]
        logits -= norms
        return logits
