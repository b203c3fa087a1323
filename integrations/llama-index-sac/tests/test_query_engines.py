"""SAC inside LlamaIndex: every response mode and the chat engines read each retrieved passage as anchor KV."""

from __future__ import annotations

import hashlib
import re

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.llms.sac import SAC
from llama_index.postprocessor.sac import SACPostprocessor, original_text
from llama_index.postprocessor.sac.base import METADATA_KEY
from sac_rag import AnchorKV
from sac_rag.markers import find_markers

MODES = ["compact", "refine", "tree_summarize", "simple_summarize", "accumulate", "compact_accumulate"]
TOP_K = 3


class SegmentSpy:
    """Records, for every LLM call, the prompt and the segments it was turned into."""

    def __init__(self, monkeypatch, compressor):
        self.calls: list[tuple[str, list]] = []
        original = compressor.segments

        def spy(prompt):
            out = original(prompt)
            self.calls.append((prompt, out))
            return out

        monkeypatch.setattr(compressor, "segments", spy)

    def hashes_per_call(self) -> list[list[str]]:
        return [[s.content_hash for s in segs if isinstance(s, AnchorKV)] for _, segs in self.calls]

    def check_no_marker_left(self) -> None:
        for prompt, segs in self.calls:
            for s in segs:
                if isinstance(s, str):
                    assert "[[sac" not in s and not re.search(r"sac:[0-9a-f]{6}", s), f"a broken marker in {s!r}"
            assert sum(isinstance(s, AnchorKV) for s in segs) == len(find_markers(prompt))


def expected_hashes(source_nodes) -> set[str]:
    out = set()
    for n in source_nodes:
        key = n.node.metadata[METADATA_KEY]["key"]
        assert key.split("-")[1] == hashlib.sha256(original_text(n).encode()).hexdigest()
        out.add(key.split("-")[1])
    return out


@pytest.fixture
def index(texts):
    docs = [Document(text=t, doc_id=f"doc-{i}", metadata={"file_name": f"doc{i}.txt"}) for i, t in enumerate(texts)]
    return VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))


@pytest.fixture
def llm(compressor):
    return SAC(compressor=compressor, max_tokens=8)


@pytest.mark.parametrize("mode", MODES)
def test_query_engine_response_modes(index, texts, llm, compressor, monkeypatch, mode):
    spy = SegmentSpy(monkeypatch, compressor)
    engine = index.as_query_engine(llm=llm, node_postprocessors=[SACPostprocessor(compressor=compressor)],
                                   response_mode=mode, similarity_top_k=TOP_K)
    response = engine.query("Where is the Eiffel Tower?")
    assert isinstance(response.response, str)
    assert len(response.source_nodes) == TOP_K
    want = expected_hashes(response.source_nodes)
    assert len(want) == TOP_K
    per_call = spy.hashes_per_call()
    assert per_call, "the LLM was called"
    read = {h for call in per_call for h in call}
    assert want <= read, f"{mode}: every retrieved passage is read as an AnchorKV"
    assert read <= want, "and nothing else"
    spy.check_no_marker_left()
    assert find_markers(response.response) == []
    # Retrieved ids and scores come back with the response.
    assert {n.node.ref_doc_id for n in response.source_nodes} <= {f"doc-{i}" for i in range(len(texts))}
    assert all(n.score is not None for n in response.source_nodes)
    if mode in ("compact", "tree_summarize", "simple_summarize", "compact_accumulate"):
        assert any(len(call) == TOP_K for call in per_call), f"{mode} packs the passages into one prompt"
    if mode in ("refine", "accumulate"):
        assert sum(len(call) for call in per_call) == TOP_K and all(len(call) == 1 for call in per_call)


@pytest.mark.parametrize("mode", MODES)
def test_markers_survive_repacking_into_a_small_context_window(index, texts, compressor, monkeypatch, mode):
    """With a 1000-token window the passages no longer fit one prompt: LlamaIndex re-splits the packed text."""
    spy = SegmentSpy(monkeypatch, compressor)
    llm = SAC(compressor=compressor, max_tokens=8, context_window=1000)
    engine = index.as_query_engine(llm=llm, node_postprocessors=[SACPostprocessor(compressor=compressor)],
                                   response_mode=mode, similarity_top_k=len(texts))
    response = engine.query("Where is the Eiffel Tower?")
    want = expected_hashes(response.source_nodes)
    assert len(want) == len(texts)
    per_call = spy.hashes_per_call()
    assert want == {h for call in per_call for h in call}
    spy.check_no_marker_left()
    if mode == "compact":
        assert sum(1 for call in per_call if call) > 1, "the packed context was split over several prompts"


@pytest.mark.parametrize("mode", ["compact", "refine"])
async def test_async_query(index, llm, compressor, monkeypatch, mode):
    spy = SegmentSpy(monkeypatch, compressor)
    engine = index.as_query_engine(llm=llm, node_postprocessors=[SACPostprocessor(compressor=compressor)],
                                   response_mode=mode, similarity_top_k=TOP_K)
    response = await engine.aquery("Where?")
    assert expected_hashes(response.source_nodes) <= {h for c in spy.hashes_per_call() for h in c}
    spy.check_no_marker_left()


def test_streaming_query(index, llm, compressor, monkeypatch):
    spy = SegmentSpy(monkeypatch, compressor)
    engine = index.as_query_engine(llm=llm, node_postprocessors=[SACPostprocessor(compressor=compressor)],
                                   streaming=True, similarity_top_k=TOP_K)
    response = engine.query("Where?")
    text = "".join(response.response_gen)
    assert isinstance(text, str)
    assert expected_hashes(response.source_nodes) <= {h for c in spy.hashes_per_call() for h in c}


@pytest.mark.parametrize("chat_mode", ["context", "condense_plus_context"])
def test_chat_engines(index, llm, compressor, monkeypatch, chat_mode):
    spy = SegmentSpy(monkeypatch, compressor)
    engine = index.as_chat_engine(chat_mode=chat_mode, llm=llm, similarity_top_k=TOP_K,
                                  node_postprocessors=[SACPostprocessor(compressor=compressor)])
    first = engine.chat("Where is the Eiffel Tower?")
    assert isinstance(first.response, str)
    want = expected_hashes(first.source_nodes)
    assert len(want) == TOP_K
    assert want <= set(spy.hashes_per_call()[-1]), "the answering call reads every retrieved passage as KV"
    second = engine.chat("And when was it finished?")
    assert isinstance(second.response, str)
    assert expected_hashes(second.source_nodes) <= set(spy.hashes_per_call()[-1])
    spy.check_no_marker_left()
    assert find_markers(first.response) == find_markers(second.response) == []


async def test_chat_engine_async_stream(index, llm, compressor, monkeypatch):
    spy = SegmentSpy(monkeypatch, compressor)
    engine = index.as_chat_engine(chat_mode="context", llm=llm, similarity_top_k=TOP_K,
                                  node_postprocessors=[SACPostprocessor(compressor=compressor)])
    response = await engine.astream_chat("Where?")
    text = "".join([t async for t in response.async_response_gen()])
    assert isinstance(text, str)
    assert expected_hashes(response.source_nodes) <= set(spy.hashes_per_call()[-1])
