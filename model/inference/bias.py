"""``bias``: phrases a caller expects (the names on a meeting invite, a form's terms), mixed in
like the cache over the history (``model.inference.neural_cache``), as pseudo-history.

Each phrase is read alone from the model's start state, ``<s> w₁ … wₙ``, and each of its words is
remembered with the network's output before it: (h after ``<s>``, w₁), (h after w₁, w₂), …
At a new position with output h,

    P_bias(w | h) ∝ Σ_j boost_j / n_j · exp(θ · h·k_j) [w_j = w]

over every phrase word j (n_j: its phrase's length, so that a phrase's words share its boost),
and every word's probability is mixed as ``(1 − λ − β) P_model + λ P_cache + β P_bias``. So a
phrase's words are likelier everywhere, and its continuation more so after its beginning (θ);
the result stays exactly normalised. Words outside the vocabulary are remembered by their
strings: the bias names "Weena" itself, not ``<unk>`` (``neural_cache.Mixed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_PHRASES = 200  # phrases in one bias
MAX_PHRASE_TOKENS = 16  # tokens in one phrase
DEFAULT_WEIGHT = 0.05  # β when a request gives phrases and no weight (tune fits it)
DEFAULT_THETA = 0.5  # θ when neither the request nor the model's cache gives one


@dataclass(frozen=True)
class Bias:
    """Tokenised phrases, each with its relative boost, their share β and θ."""

    phrases: tuple[tuple[str, ...], ...]
    boosts: tuple[float, ...]
    weight: float
    theta: float

    def __post_init__(self) -> None:
        if not 1 <= len(self.phrases) <= MAX_PHRASES:
            raise ValueError(f"give 1 to {MAX_PHRASES} phrases, got {len(self.phrases)}")
        if len(self.boosts) != len(self.phrases):
            raise ValueError("one boost per phrase")
        for i, phrase in enumerate(self.phrases):
            if not 1 <= len(phrase) <= MAX_PHRASE_TOKENS:
                raise ValueError(
                    f"phrase {i} has {len(phrase)} tokens; each needs 1 to {MAX_PHRASE_TOKENS}"
                )
        for i, boost in enumerate(self.boosts):
            if not (math.isfinite(boost) and boost > 0):
                raise ValueError(f"phrase {i}: boost must be a finite number > 0, got {boost}")
        if not (math.isfinite(self.weight) and 0 < self.weight < 1):
            raise ValueError(f"bias weight must be in (0, 1), got {self.weight}")
        if not (math.isfinite(self.theta) and self.theta >= 0):
            raise ValueError(f"bias theta must be a finite number ≥ 0, got {self.theta}")

    def entries(self) -> list[tuple[int, int, float]]:
        """(phrase, position, log prior) of every remembered word."""
        return [
            (i, k, math.log(boost) - math.log(len(phrase)))  # a tiny boost: no underflow
            for i, (phrase, boost) in enumerate(zip(self.phrases, self.boosts, strict=True))
            for k in range(len(phrase))
        ]

    def to_dict(self) -> dict[str, object]:
        return {"phrases": len(self.phrases), "weight": self.weight, "theta": self.theta}
