"""nextword's recurrent neural-network language model, in NumPy alone.

The package is grouped by stage, each building only on those before it:

- ``model.network``: layers, cells, the left-to-right ``RNNLM`` and the gap-filling ``BiRNNLM``.
- ``model.text``: ``Tokenizer``, ``Vocabulary``, reading corpora, laying ids out in batches.
- ``model.inference``: the ``LanguageModel`` interface every servable kind implements
  (``RecurrentLM``, ``GapFillingLM``), the prefix cache, perplexity, and checkpoints
  (``save_checkpoint`` / ``load_checkpoint``: one directory per model, safetensors, no pickle).
- ``model.training``: configuration, optimisers, steps, the loop, resumable snapshots.
"""

from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.gap_filling_lm import GapFillingLM
from model.inference.language_model import (
    Call,
    CandidateScore,
    InputError,
    LanguageModel,
    SentenceScore,
    UnsupportedCallError,
)
from model.inference.recurrent_lm import RecurrentLM
from model.network.layers import NonFiniteError
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

__version__ = "0.1.0"

__all__ = [
    "RNNLM",
    "Call",
    "CandidateScore",
    "CheckpointError",
    "GapFillingLM",
    "InputError",
    "LanguageModel",
    "ModelConfig",
    "NonFiniteError",
    "RecurrentLM",
    "SentenceScore",
    "Tokenizer",
    "UnsupportedCallError",
    "Vocabulary",
    "load_checkpoint",
    "save_checkpoint",
]
