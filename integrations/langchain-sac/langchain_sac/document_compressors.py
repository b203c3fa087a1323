"""SACDocumentCompressor: LangChain's document-compressor face of an SACCompressor."""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field
from sac_rag.compressor import SACCompressor
from sac_rag.ordering import prompt_order

__all__ = ["SACDocumentCompressor", "original_text", "METADATA_KEY"]

METADATA_KEY = "sac"


def original_text(document: Document) -> str:
    """The text a compressed document stood for (the document's own text if it was not compressed)."""
    return document.metadata.get(METADATA_KEY, {}).get("text", document.page_content)


class SACDocumentCompressor(BaseDocumentCompressor):
    """Compress each retrieved document into anchor KV; its text becomes a marker the SAC LLMs resolve.

    Ids and metadata (scores included) are kept; ``metadata["sac"]`` adds the statistics and the original text.
    ``order`` places the documents for the prompt (``sac_rag.ordering``): they arrive ranked, most relevant first,
    and ``"most_relevant_last"`` puts the best one nearest the question.
    """

    compressor: SACCompressor = Field(default_factory=SACCompressor, description="Shared with ChatSAC / SACLLM.")
    order: Literal["as_given", "most_relevant_last", "most_relevant_first"] = Field(
        default="most_relevant_last", description="Where the documents go in the prompt (sac_rag.ordering.ORDERS).")
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Optional[Callbacks] = None
    ) -> Sequence[Document]:
        self.compressor.check_query(query)
        if not documents:
            return []
        # An empty or whitespace-only document has nothing to compress: it passes through as it is, rather
        # than failing the whole retrieval.
        todo = [i for i, d in enumerate(documents) if d.page_content.strip()]
        compressed = self.compressor.compress([documents[i].page_content for i in todo]) if todo else []
        results = dict(zip(todo, compressed))
        out = []
        for i, doc in enumerate(documents):
            res = results.get(i)
            if res is None:
                out.append(Document(page_content=doc.page_content, metadata=dict(doc.metadata), id=doc.id))
                continue
            meta: dict[str, Any] = dict(doc.metadata)
            meta[METADATA_KEY] = {**res.to_dict(), "text": doc.page_content}
            out.append(Document(page_content=res.marker, metadata=meta, id=doc.id))
        return [out[i] for i in prompt_order(len(out), None, self.order)]
