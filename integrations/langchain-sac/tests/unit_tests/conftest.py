"""Fixtures for the langchain-sac unit tests: a tiny random SAC model (built in-process, no downloads)."""

from __future__ import annotations

import os

import pytest
import torch
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from sac_rag.compressor import SACCompressor
from sac_rag.testing import tiny_sac

if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

TEXTS = [
    "The Eiffel Tower is in Paris and was finished in 1889.",
    "Mount Everest is the highest mountain above sea level.",
    "Water boils at 100 degrees Celsius at sea level.",
]


class FixedRetriever(BaseRetriever):
    """Returns (copies of) the same documents for any query."""

    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [d.model_copy(deep=True) for d in self.docs]


@pytest.fixture(scope="session")
def sac():
    return tiny_sac("llama")


@pytest.fixture
def compressor(sac):
    return SACCompressor(sac)


@pytest.fixture
def docs() -> list[Document]:
    return [
        Document(page_content=t, id=f"doc-{i}", metadata={"source": f"file{i}.txt", "score": 0.9 - i / 10, "page": i})
        for i, t in enumerate(TEXTS)
    ]


@pytest.fixture
def retriever(docs) -> FixedRetriever:
    return FixedRetriever(docs=docs)


@pytest.fixture
def empty_retriever() -> FixedRetriever:
    return FixedRetriever(docs=[])
