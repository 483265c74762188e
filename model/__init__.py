"""nextword's recurrent neural-network language model, in NumPy alone.

The public entry points:

- ``Tokenizer`` and ``Vocabulary``: text → tokens → ids.
- ``ModelConfig`` and ``RNNLM``: the network (RNN/LSTM/GRU, stacked, dropout, tied weights).
- ``LanguageModel``: inference (next-word distribution, candidates, top-k, sentence scores).
- ``save_checkpoint`` / ``load_checkpoint``: one directory per model, safetensors, no pickle.
"""

from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.recurrent_lm import CandidateScore, LanguageModel, SentenceScore
from model.network.layers import NonFiniteError
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

__version__ = "0.1.0"

__all__ = [
    "RNNLM",
    "CandidateScore",
    "CheckpointError",
    "LanguageModel",
    "ModelConfig",
    "NonFiniteError",
    "SentenceScore",
    "Tokenizer",
    "Vocabulary",
    "load_checkpoint",
    "save_checkpoint",
]
