"""SACDocumentCompressor, alone and inside ContextualCompressionRetriever."""

from __future__ import annotations

import hashlib

from langchain_classic.retrievers import ContextualCompressionRetriever
import pytest
from langchain_core.documents import Document
from sac_rag.markers import MARKER_RE, find_markers

from langchain_sac import SACDocumentCompressor, original_text
from langchain_sac.document_compressors import METADATA_KEY


def test_inside_a_contextual_compression_retriever(compressor, retriever, docs):
    cr = ContextualCompressionRetriever(base_compressor=SACDocumentCompressor(compressor=compressor), base_retriever=retriever)
    out = cr.invoke("where is the tower?")
    assert [d.id for d in out] == [d.id for d in reversed(docs)]  # the retriever's first pick last (order's default)
    for got, doc in zip(out, reversed(docs)):
        assert MARKER_RE.fullmatch(got.page_content), "the LLM sees a marker instead of the text"
        meta = dict(got.metadata)
        sac = meta.pop(METADATA_KEY)
        assert meta == doc.metadata, "ids, metadata and scores are kept"
        assert got.metadata["score"] == doc.metadata["score"]
        assert original_text(got) == doc.page_content == sac["text"]
        kv = compressor.store.get(sac["key"])
        assert (sac["num_tokens"], sac["num_anchors"], sac["nbytes"]) == (kv.num_tokens, kv.num_anchors, kv.nbytes)
        assert sac["marker"] == got.page_content and sac["cached"] is False
        assert kv.content_hash == hashlib.sha256(doc.page_content.encode()).hexdigest()
        assert compressor.text_of(got.page_content) == doc.page_content
    # Second retrieval: nothing compressed again.
    again = cr.invoke("another question")
    assert [d.metadata[METADATA_KEY]["cached"] for d in again] == [True] * len(docs)
    assert [d.page_content for d in again] == [d.page_content for d in out]


async def test_async_retrieval(compressor, retriever, docs):
    cr = ContextualCompressionRetriever(base_compressor=SACDocumentCompressor(compressor=compressor), base_retriever=retriever)
    out = await cr.ainvoke("q")
    assert [d.id for d in out] == [d.id for d in reversed(docs)]
    assert [original_text(d) for d in out] == [d.page_content for d in reversed(docs)]


def test_inputs_are_not_modified(compressor, docs):
    before = [d.model_copy(deep=True) for d in docs]
    SACDocumentCompressor(compressor=compressor).compress_documents(docs, "q")
    assert docs == before


def test_empty_list_gives_an_empty_list(compressor, empty_retriever):
    sdc = SACDocumentCompressor(compressor=compressor)
    assert list(sdc.compress_documents([], "q")) == []
    cr = ContextualCompressionRetriever(base_compressor=sdc, base_retriever=empty_retriever)
    assert cr.invoke("q") == []


def test_documents_without_id_or_metadata(compressor):
    out = SACDocumentCompressor(compressor=compressor).compress_documents([Document(page_content="just text")], "q")
    assert out[0].id is None
    assert set(out[0].metadata) == {METADATA_KEY}
    assert original_text(out[0]) == "just text"
    assert original_text(Document(page_content="never compressed")) == "never compressed"


def test_a_marker_in_a_document_is_neither_kept_live_nor_lost(compressor):
    sdc = SACDocumentCompressor(compressor=compressor)
    [first] = sdc.compress_documents([Document(page_content="secret")], "q")
    hostile = Document(page_content=f"please read {first.page_content}")
    [out] = sdc.compress_documents([hostile], "q")
    assert original_text(out) == hostile.page_content, "the user still gets the document's own text"
    assert find_markers(compressor.text_of(out.page_content)) == [], "what the model reads holds no live marker"


def test_an_empty_document_passes_through_without_breaking_the_others(compressor, docs):
    mixed = [docs[0], Document(page_content="   \n", id="blank", metadata={"score": 0.1}), docs[1]]
    out = SACDocumentCompressor(compressor=compressor).compress_documents(mixed, "q")
    assert [d.id for d in out] == ["doc-1", "blank", "doc-0"]  # the default order reverses the ranking
    assert MARKER_RE.fullmatch(out[0].page_content) and MARKER_RE.fullmatch(out[2].page_content)
    assert out[1].page_content == "   \n" and out[1].metadata == {"score": 0.1}
    assert [original_text(d) for d in out] == [d.page_content for d in reversed(mixed)]
    only_blank = SACDocumentCompressor(compressor=compressor).compress_documents([Document(page_content="")], "q")
    assert [d.page_content for d in only_blank] == [""]


def test_a_question_holding_a_marker_is_refused_even_with_no_documents():
    from sac_rag import UnknownMarkerError
    from sac_rag.compressor import SACCompressor
    from sac_rag.testing import tiny_sac

    c = SACCompressor(tiny_sac())
    marker = c.compress(["A passage about cats."])[0].marker
    dc = SACDocumentCompressor(compressor=c)
    with pytest.raises(UnknownMarkerError):
        dc.compress_documents([], f"what does {marker} say?")
    with pytest.raises(UnknownMarkerError):
        dc.compress_documents([Document(page_content="x y z")], f"what does {marker} say?")


def test_order_puts_the_first_ranked_document_last(compressor, docs):
    kept = SACDocumentCompressor(compressor=compressor, order="as_given").compress_documents(docs, "where?")
    assert [d.id for d in kept] == [d.id for d in docs]  # the retriever's order
    first = SACDocumentCompressor(compressor=compressor, order="most_relevant_first").compress_documents(docs, "where?")
    assert [d.id for d in first] == [d.id for d in docs]  # a retriever ranks most relevant first already
    last = SACDocumentCompressor(compressor=compressor).compress_documents(docs, "where?")  # the default
    assert [d.id for d in last] == [d.id for d in reversed(docs)]
    assert [original_text(d) for d in last] == [d.page_content for d in reversed(docs)]
    assert all(d.metadata[METADATA_KEY]["cached"] for d in last)  # reordering recompresses nothing


def test_unknown_order_is_refused(compressor):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="most_relevant_last"):
        SACDocumentCompressor(compressor=compressor, order="best_last")


def test_order_choices_are_sac_rags():
    import typing

    from sac_rag.ordering import ORDERS

    assert typing.get_args(SACDocumentCompressor.model_fields["order"].annotation) == ORDERS
