"""End to end: retriever -> SACDocumentCompressor -> prompt -> ChatSAC, reading each document as anchor KV."""

from __future__ import annotations

import hashlib

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnablePassthrough
from sac_rag import AnchorKV

from langchain_sac import SACLLM, ChatSAC, SACDocumentCompressor


def _spy_segments(monkeypatch, compressor):
    results = []
    original = compressor.segments

    def spy(prompt):
        out = original(prompt)
        results.append((prompt, out))
        return out

    monkeypatch.setattr(compressor, "segments", spy)
    return results


def _join(docs):
    return "\n\n".join(d.page_content for d in docs)


def test_rag_chain_with_chat_model(compressor, retriever, docs, monkeypatch):
    calls = _spy_segments(monkeypatch, compressor)
    cr = ContextualCompressionRetriever(base_compressor=SACDocumentCompressor(compressor=compressor), base_retriever=retriever)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer the question from the context.\n\nContext:\n{context}"), ("human", "{question}")]
    )
    chain = {"context": cr | _join, "question": RunnablePassthrough()} | prompt | ChatSAC(compressor=compressor, max_tokens=8) | StrOutputParser()
    answer = chain.invoke("Where is the Eiffel Tower?")
    assert isinstance(answer, str)
    assert len(calls) == 1
    text, segments = calls[0]
    kvs = [s for s in segments if isinstance(s, AnchorKV)]
    assert len(kvs) == len(docs), "one AnchorKV per retrieved document"
    # the default order puts the retriever's first document last, nearest the question (sac_rag.ordering)
    assert [kv.content_hash for kv in kvs] == [hashlib.sha256(d.page_content.encode()).hexdigest() for d in reversed(docs)]
    plain = "".join(s for s in segments if isinstance(s, str))
    assert "Where is the Eiffel Tower?" in plain and not any(d.page_content in plain for d in docs)


async def test_rag_chain_async_with_completion_model(compressor, retriever, docs, monkeypatch):
    calls = _spy_segments(monkeypatch, compressor)
    cr = ContextualCompressionRetriever(base_compressor=SACDocumentCompressor(compressor=compressor), base_retriever=retriever)
    prompt = PromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}\nAnswer:")
    chain = {"context": cr | _join, "question": RunnablePassthrough()} | prompt | SACLLM(compressor=compressor, max_tokens=8)
    chunks = [c async for c in chain.astream("Where?")]
    assert isinstance("".join(chunks), str)
    [(_, segments)] = calls
    assert sum(isinstance(s, AnchorKV) for s in segments) == len(docs)
