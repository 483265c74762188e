"""The reranking weights a model was tuned with on a recogniser's own N-best lists
(``nextword tune --nbest``): ``/v1/rerank``'s defaults for that model, kept in the checkpoint's
``rerank`` section."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BOUND = 1e3  # as the request fields allow


@dataclass(frozen=True)
class RerankWeights:
    """combined = score + lm_weight · lm_log_prob + length_bonus · n_tokens."""

    lm_weight: float
    length_bonus: float

    def __post_init__(self) -> None:
        for name in ("lm_weight", "length_bonus"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -BOUND <= value <= BOUND):
                raise ValueError(f"rerank {name} must be a number in [-1000, 1000], got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return {"lm_weight": self.lm_weight, "length_bonus": self.length_bonus}

    @classmethod
    def from_dict(cls, data: Any) -> RerankWeights:
        """The checkpoint's ``rerank`` section, checked (ValueError naming what is wrong)."""
        if not isinstance(data, dict) or set(data) != {"lm_weight", "length_bonus"}:
            raise ValueError(
                f"the rerank section must hold lm_weight and length_bonus, got {data!r}"
            )
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"rerank {name} must be a number, got {value!r}")
        try:
            return cls(float(data["lm_weight"]), float(data["length_bonus"]))
        except OverflowError:
            raise ValueError("rerank lm_weight and length_bonus must be in range") from None
