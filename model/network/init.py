"""Weight initialisation suited to each cell, so training starts with well-scaled signals.

- Input weights Wx: Glorot/Xavier uniform per gate block, keeping activation variance near 1.
- Recurrent weights Wh: orthogonal per gate block (all singular values 1, so repeated
  multiplication by Wh neither explodes nor vanishes at the start); identity for a ReLU RNN
  (Le, Jaitly & Hinton 2015, "IRNN"), which starts as a perfect memory.
- LSTM forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015), so the cell keeps its
  memory until it learns to forget; other biases 0.
- Embedding and output matrices uniform in [-0.1, 0.1] (Zaremba et al. 2014).
"""

from __future__ import annotations

import numpy as np

EMBEDDING_SCALE = 0.1


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random (n, n) orthogonal matrix, uniformly distributed (QR with sign correction)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def glorot_uniform(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform in ±sqrt(6 / (fan_in + fan_out)), shape (fan_in, fan_out)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def init_cell(
    cell: str, activation: str, D: int, H: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One recurrent layer's parameters in float64: Wx (D, G), Wh (H, G), b (G,)."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    Wx = np.concatenate([glorot_uniform(D, H, rng) for _ in range(gates)], axis=1)
    if cell == "rnn" and activation == "relu":
        Wh = np.eye(H)
    else:
        Wh = np.concatenate([orthogonal(H, rng) for _ in range(gates)], axis=1)
    b = np.zeros(gates * H)
    params = {"Wx": Wx, "Wh": Wh, "b": b}
    if cell == "lstm":
        b[H : 2 * H] = 1.0  # forget gate (gate order i, f, o, g)
    if cell == "gru":
        params["bhn"] = np.zeros(H)
    return params


def init_embedding(V: int, D: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform in ±0.1, shape (V, D); also used for an untied output matrix (V, H)."""
    return rng.uniform(-EMBEDDING_SCALE, EMBEDDING_SCALE, size=(V, D))
