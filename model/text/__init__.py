"""Text to ids: tokenizers, the vocabulary, reading corpora, and laying ids out in batches."""
