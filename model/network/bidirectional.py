"""The gap-filling (cloze) model: the word at a gap from the words on both sides of it.

Two recurrent stacks with separate weights read a sentence ``<s> w_1 … w_n </s>``:

    f_t = forward stack after reading  <s> w_1 … w_t           (the left context)
    g_t = backward stack after reading </s> w_n … w_t          (the right context, from the end)
    P(w_t | w_<t, w_>t) = softmax(V_f f_{t-1} + V_b g_{t+1} + b)

implemented as one output layer on the concatenated state, ``W = [V_f | V_b]`` of shape (V, 2H).
With ``softmax="class"`` that layer is class-factored (network.class_softmax) on the same
concatenated state: ``P(w) = P(class(w) | f, g) · P(w | class(w), f, g)``.
Neither state has seen ``w_t``. ``<s>`` and ``</s>`` bound the two sides, so a gap at the start or
the end of a sentence is predicted from the sentence boundary on that side.

Shape letters: T time, N sentences, H hidden size, V vocabulary, M predicted positions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.network.class_softmax import class_log_probs_at, class_softmax_loss
from model.network.init import init_embedding
from model.network.layers import Grad, log_softmax_at, softmax_output_loss, times_rows
from model.network.recurrent import ModelConfig, NetworkState, RecurrentStack, check_params
from model.text.batches import length_grouped
from model.text.vocab import Vocabulary


@dataclass
class SentenceBatch:
    """N sentences laid out for both stacks, with where each word's two states will be.

    - fwd_ids: (T, N) ``<s> w_1 … w_n`` then padding; bwd_ids: (T, N) ``</s> w_n … w_1``.
    - left, right: (M,) flat indices into the (T*N) outputs of each stack: the states that
      predict each word, ``f_{t-1}`` and ``g_{t+1}``; targets: (M,) the words.
    """

    fwd_ids: np.ndarray
    bwd_ids: np.ndarray
    left: np.ndarray
    right: np.ndarray
    targets: np.ndarray

    @classmethod
    def from_sentences(cls, sentences: Sequence[np.ndarray], bos: int, eos: int) -> SentenceBatch:
        N, T = len(sentences), max(len(s) for s in sentences) + 1
        fwd, bwd = np.zeros((T, N), dtype=np.int64), np.zeros((T, N), dtype=np.int64)
        left, right, targets = [], [], []
        for j, words in enumerate(sentences):
            n = len(words)
            fwd[: n + 1, j] = np.concatenate([[bos], words])
            bwd[: n + 1, j] = np.concatenate([[eos], words[::-1]])
            t = np.arange(1, n + 1)  # word w_t, t = 1..n
            left.append((t - 1) * N + j)  # f_{t-1}: the forward output after w_{t-1}
            right.append((n - t) * N + j)  # g_{t+1}: the backward output after w_{t+1}
            targets.append(words)
        return cls(fwd, bwd, np.concatenate(left), np.concatenate(right), np.concatenate(targets))


def sentence_batches(
    sentences: Sequence[np.ndarray], batch_size: int, rng: np.random.Generator, bos: int, eos: int
) -> Iterator[SentenceBatch]:
    """Shuffled batches of sentences of similar length (little padding), reproducible."""
    for group in length_grouped([len(s) for s in sentences], batch_size, rng):
        yield SentenceBatch.from_sentences([sentences[i] for i in group], bos, eos)


class BiRNNLM:
    """Parameters and forward/backward of the gap-filling model.

    Parameter names: ``fwd.embedding.W``, ``fwd.rnn.{l}.*``, ``bwd.embedding.W``, ``bwd.rnn.{l}.*``,
    ``output.W`` (V, 2H) and ``output.b`` (V,); a class-factored output adds
    ``output.class.W`` (B, 2H) and ``output.class.b`` (B,), B the classes past the shortlist.
    """

    def __init__(
        self,
        config: ModelConfig,
        params: dict[str, np.ndarray] | None = None,
        *,
        seed: int = 0,
        dtype: type | np.dtype = np.float32,
    ) -> None:
        if not config.bidirectional:
            raise ValueError("BiRNNLM needs a config with bidirectional=True")
        self.config = config
        self.classes = config.classes  # None: a full softmax
        self.fwd, self.bwd = RecurrentStack(config, "fwd."), RecurrentStack(config, "bwd.")
        self.cell = self.fwd.cell
        if params is None:
            rng = np.random.default_rng(seed)
            params = self.fwd.initial_params(rng) | self.bwd.initial_params(rng)
            params["output.W"] = init_embedding(config.vocab_size, 2 * config.hidden_size, rng)
            params["output.b"] = np.zeros(config.vocab_size)
            if self.classes is not None:
                K = self.classes.num_bands  # the shortlist's head rows are word rows
                params["output.class.W"] = init_embedding(K, 2 * config.hidden_size, rng)
                params["output.class.b"] = np.zeros(K)
        check_params(params, self.param_shapes())
        self.params = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in params.items()}

    @property
    def dtype(self) -> np.dtype:
        return self.params["output.b"].dtype

    @property
    def output_weight(self) -> np.ndarray:
        return self.params["output.W"]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        shapes = self.fwd.param_shapes() | self.bwd.param_shapes()
        shapes["output.W"] = (c.vocab_size, 2 * c.hidden_size)
        shapes["output.b"] = (c.vocab_size,)
        if self.classes is not None:
            shapes["output.class.W"] = (self.classes.num_bands, 2 * c.hidden_size)
            shapes["output.class.b"] = (self.classes.num_bands,)
        return shapes

    def num_parameters(self) -> int:
        return sum(p.size for p in self.params.values())

    def init_state(self, batch_size: int) -> NetworkState:
        return self.fwd.init_state(batch_size, self.dtype)

    def _read(
        self, batch: SentenceBatch, rng: np.random.Generator | None, keep: bool = True
    ) -> tuple[np.ndarray, Any, Any]:
        """Both stacks over the batch; the (M, 2H) states that predict the words, and the caches."""
        N = batch.fwd_ids.shape[1]
        f, _, f_cache = self.fwd.forward(self.params, batch.fwd_ids, self.init_state(N), rng, keep)
        g, _, g_cache = self.bwd.forward(self.params, batch.bwd_ids, self.init_state(N), rng, keep)
        H = self.config.hidden_size
        states = np.concatenate(
            [f.reshape(-1, H)[batch.left], g.reshape(-1, H)[batch.right]], axis=1
        )
        return states, (f.shape, f_cache), (g.shape, g_cache)

    def loss_and_grads(
        self, batch: SentenceBatch, rng: np.random.Generator | None = None
    ) -> tuple[float, dict[str, Grad]]:
        """Mean cross-entropy of the batch's words given both sides, and every gradient."""
        states, (f_shape, f_cache), (g_shape, g_cache) = self._read(batch, rng)
        p = self.params
        class_grads: dict[str, Grad] = {}
        if self.classes is None:
            loss, dstates, dW, db = softmax_output_loss(
                states[:, None, :], p["output.W"], p["output.b"], batch.targets[:, None]
            )
        else:
            loss, dstates, out = class_softmax_loss(
                states[:, None, :], p["output.W"], p["output.b"],
                p["output.class.W"], p["output.class.b"], self.classes, batch.targets[:, None],
            )  # fmt: skip
            dW, db = out["W"], out["b"]
            class_grads = {"output.class.W": out["Wc"], "output.class.b": out["bc"]}
        H = self.config.hidden_size
        df, dg = np.zeros(f_shape, dtype=dstates.dtype), np.zeros(g_shape, dtype=dstates.dtype)
        df.reshape(-1, H)[batch.left] = dstates[:, 0, :H]  # each state predicts one word at most
        dg.reshape(-1, H)[batch.right] = dstates[:, 0, H:]
        grads = self.fwd.backward(df, f_cache) | self.bwd.backward(dg, g_cache)
        grads["output.W"], grads["output.b"] = dW, db
        grads.update(class_grads)
        return loss, grads

    def word_log_probs(self, batch: SentenceBatch) -> np.ndarray:
        """log P(w_t | the rest of its sentence) for every word of the batch, shape (M,)."""
        states, _, _ = self._read(batch, None, keep=False)
        return self._log_probs_at(states, batch.targets)

    def _log_probs_at(self, states: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """log P(targets[m]) from the (M, 2H) states: a class softmax costs K + |class| rows."""
        p = self.params
        if self.classes is None:
            logits = times_rows(states, p["output.W"]) + p["output.b"]
            return log_softmax_at(logits, np.arange(len(targets)), targets)[0]
        return class_log_probs_at(
            states, targets, p["output.W"], p["output.b"],
            p["output.class.W"], p["output.class.b"], self.classes,
        )  # fmt: skip

    # ------------------------------------------------------------ inference
    def side_states(
        self, left: np.ndarray, right: np.ndarray
    ) -> tuple[NetworkState, np.ndarray, NetworkState, np.ndarray]:
        """Read ``<s> left`` forward, ``</s> right`` backward: each stack's state and top output."""
        fwd_ids = np.concatenate([[Vocabulary.bos_id], left]).astype(np.int64)[:, None]
        bwd_ids = np.concatenate([[Vocabulary.eos_id], right[::-1]]).astype(np.int64)[:, None]
        f, f_state, _ = self.fwd.forward(self.params, fwd_ids, self.init_state(1), keep_cache=False)
        g, g_state, _ = self.bwd.forward(self.params, bwd_ids, self.init_state(1), keep_cache=False)
        return f_state, f[-1], g_state, g[-1]

    def fill_scores(
        self, left: np.ndarray, right: np.ndarray, candidates: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Per candidate, the log-probability of each of its tokens given everything else.

        A one-token candidate gets the exact log P(c | left, right). For c_1 … c_k each token is
        predicted from ``left c_<j`` and ``c_>j right`` (all candidates in one batch per stack);
        the sum is the candidate's pseudo-log-likelihood (Salazar et al. 2020).
        """
        f_state, f_last, g_state, g_last = self.side_states(left, right)
        M, K, H = len(candidates), max(len(c) for c in candidates), self.config.hidden_size
        fwd_ids, bwd_ids = np.zeros((K, M), dtype=np.int64), np.zeros((K, M), dtype=np.int64)
        for m, c in enumerate(candidates):
            fwd_ids[: len(c), m], bwd_ids[: len(c), m] = c, c[::-1]

        def repeat(state: NetworkState) -> NetworkState:
            return [tuple(np.repeat(s, M, axis=0) for s in layer) for layer in state]

        # F[j]: the forward output after c_{j+1}; G[j]: the backward output after c_{k-j}
        F, _, _ = self.fwd.forward(self.params, fwd_ids, repeat(f_state), keep_cache=False)
        G, _, _ = self.bwd.forward(self.params, bwd_ids, repeat(g_state), keep_cache=False)
        rows, targets = [], []
        for m, c in enumerate(candidates):
            k = len(c)
            for j in range(k):  # token c_{j+1}: left = after c_j (or left), right = after c_{j+2}
                lstate = f_last[0] if j == 0 else F[j - 1, m]
                rstate = g_last[0] if j == k - 1 else G[k - j - 2, m]
                rows.append(np.concatenate([lstate, rstate]))
                targets.append(c[j])
        states = np.stack(rows).reshape(-1, 2 * H)
        picked = self._log_probs_at(states, np.array(targets)).astype(np.float64)
        return np.split(picked, np.cumsum([len(c) for c in candidates])[:-1])
