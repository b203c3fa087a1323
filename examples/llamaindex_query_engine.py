"""A LlamaIndex query engine with SAC: FAISS + all-MiniLM-L6-v2 retrieval, passages compressed into anchor KV.

Run: .venv/bin/python examples/llamaindex_query_engine.py
Corpus: 40 SQuAD v1.1 dev paragraphs (Wikipedia, CC BY-SA 4.0), bundled in sac_rag/data/demo_corpus.json.
"""

import json
from importlib import resources

from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.llms.sac import SAC
from llama_index.postprocessor.sac import SACPostprocessor, original_text

from sac_rag import SACCompressor
from sac_rag.retrieval import FaissIndex


class FaissRetriever(BaseRetriever):
    """A plain dense retriever over a FAISS index."""

    def __init__(self, index: FaissIndex, nodes: list[TextNode], k: int = 3) -> None:
        super().__init__()
        self._index, self._nodes, self._k = index, nodes, k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [NodeWithScore(node=self._nodes[h.index], score=h.score) for h in self._index.search(query_bundle.query_str, self._k)]


corpus = json.loads(resources.files("sac_rag").joinpath("data/demo_corpus.json").read_text())
nodes = [TextNode(text=p["text"], id_=p["id"], metadata={"title": p["title"]}) for p in corpus["passages"]]
retriever = FaissRetriever(FaissIndex([n.text for n in nodes]), nodes)

# The three lines that add SAC: one shared compressor, the postprocessor, the LLM.
compressor = SACCompressor()
postprocessor = SACPostprocessor(compressor=compressor)
llm = SAC(compressor=compressor, max_tokens=24, stop=["\n"])

engine = RetrieverQueryEngine.from_args(retriever, llm=llm, node_postprocessors=[postprocessor], response_mode="compact")
compressor.precompress([n.text for n in nodes])  # indexing time: every passage compressed once
for q in corpus["questions"][:4]:
    response = engine.query(q["question"])
    print(f"Q: {q['question']}\n   answer: {str(response).strip()!r}   (gold: {q['answers'][0]!r})")
    print("   sources:", [(n.node.node_id, round(n.score, 3), original_text(n)[:40] + "...") for n in response.source_nodes])
print("KV store:", compressor.store.stats())
