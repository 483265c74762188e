"""What the two recurrent kinds share: a network, its output layer, and its self-check."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from model.inference.language_model import LanguageModel
from model.network.layers import log_softmax_at
from model.network.recurrent import ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

OUTPUT_CHUNK_ROWS = 2048  # rows of (rows, V) logits computed at once, bounding memory
FEW_ROWS = 16  # up to this many output rows, W hᵀ beats h Wᵀ (see output_rows)


class Network(Protocol):
    """What a checkpoint stores and the output layer reads: RNNLM and BiRNNLM both are one."""

    config: ModelConfig
    params: dict[str, np.ndarray]

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

    def check_parameters(self) -> None:
        for name, value in self.net.params.items():
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise FloatingPointError(f"parameter {name!r} has {bad} non-finite values")

    # ------------------------------------------------------------ the output layer
    def output_rows(self, hidden: np.ndarray) -> np.ndarray:
        """Logits (m, V) of top-layer outputs hidden (m, H): ``h Wᵀ + b``.

        For a few rows (a single request) the product is taken as ``W hᵀ``: BLAS then streams W
        in its own row order, about twice as fast as ``h Wᵀ`` there (bench/RESULTS.md).
        """
        W = self.net.output_weight
        few = len(hidden) <= FEW_ROWS
        logits: np.ndarray = np.ascontiguousarray((W @ hidden.T).T) if few else hidden @ W.T
        logits += self.net.params["output.b"]  # in place: no second (m, V) array
        return logits

    def log_probs_at(self, hidden: np.ndarray, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """log P(tokens[k]) under the distribution of output row rows[k] of hidden (M, H).

        One output product per chunk of rows, any number of tokens per row; only the normaliser
        and the wanted logits are formed, not every log-probability.
        """
        out = np.empty(len(tokens), dtype=np.float64)
        for start in range(0, len(hidden), OUTPUT_CHUNK_ROWS):
            logits = self.output_rows(hidden[start : start + OUTPUT_CHUNK_ROWS])  # (m, V)
            mine = (rows >= start) & (rows < start + len(logits))
            out[mine] = log_softmax_at(logits, rows[mine] - start, tokens[mine], blas_sum=True)[0]
        return out
