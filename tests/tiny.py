"""The tiny models live in :mod:`sac_rag.testing` (the integration packages' tests use them too)."""

from sac_rag.testing import VOCAB, byte_tokenizer, tiny_gemma3, tiny_llama  # noqa: F401
