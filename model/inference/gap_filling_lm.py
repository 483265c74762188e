"""The gap-filling model: candidates for a gap scored from the words on both sides of it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from model.inference.evaluation import gap_cross_entropy
from model.inference.language_model import Call, CandidateScore, Evaluation, GapScores, Text
from model.inference.network_lm import NetworkLM
from model.network.bidirectional import BiRNNLM


class GapFillingLM(NetworkLM[BiRNNLM]):
    """A bidirectional recurrent model (``BiRNNLM``): it serves ``fill`` only."""

    task = "gap-filling"
    calls = frozenset({Call.FILL})

    def fill(
        self, left: Text, right: Text, candidates: Sequence[Text], prefix: Sequence[str] = ()
    ) -> GapScores:
        """Method ``bidirectional``: a one-token candidate gets the exact log P(c | left, right);
        a longer one the sum over its tokens of log P(token | everything else), its
        pseudo-log-likelihood. ``token_log_probs`` are the candidate's own tokens'. Trained on
        sentences alone, it reads no ``prefix``."""
        left_tokens, right_tokens = self.tokenize(left), self.tokenize(right)
        token_lists = self.tokenize_all("candidates", candidates)
        encode = self.vocab.encode
        per_token = self.net.fill_scores(
            encode(left_tokens), encode(right_tokens), [encode(t) for t in token_lists]
        )
        scores = []
        for tokens, lps in zip(token_lists, per_token, strict=True):
            oov = self.oov_indices(tokens)
            scores.append(CandidateScore(tokens, math.fsum(lps), lps.tolist(), bool(oov), oov))
        return GapScores("bidirectional", scores)

    def evaluate(self, sentences: list[list[str]], batch_size: int = 1) -> Evaluation:
        """Every word predicted from both sides of it; ``</s>`` is not scored."""
        cross_entropy, tokens = gap_cross_entropy(
            self.net, [self.vocab.encode(s) for s in sentences]
        )
        oov = sum(token not in self.vocab for s in sentences for token in s)
        return Evaluation(self.task, tokens, cross_entropy, oov / max(tokens, 1))
