"""A LangChain RAG chain with SAC: FAISS + all-MiniLM-L6-v2 retrieval, passages compressed into anchor KV.

Run: .venv/bin/python examples/langchain_rag.py
Corpus: 40 SQuAD v1.1 dev paragraphs (Wikipedia, CC BY-SA 4.0), bundled in sac_rag/data/demo_corpus.json.
"""

import json
from importlib import resources

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_sac import SACLLM, SACDocumentCompressor, original_text

from sac_rag import SACCompressor
from sac_rag.retrieval import FaissIndex


class FaissRetriever(BaseRetriever):
    """A plain dense retriever: the part of the chain that existed before SAC."""

    index: FaissIndex
    docs: list[Document]
    k: int = 3
    model_config = {"arbitrary_types_allowed": True}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.index.search(query, self.k)
        return [Document(page_content=h.text, id=self.docs[h.index].id,
                         metadata={**self.docs[h.index].metadata, "score": h.score}) for h in hits]


corpus = json.loads(resources.files("sac_rag").joinpath("data/demo_corpus.json").read_text())
docs = [Document(page_content=p["text"], id=p["id"], metadata={"title": p["title"]}) for p in corpus["passages"]]
retriever = FaissRetriever(index=FaissIndex([d.page_content for d in docs]), docs=docs)

# The three lines that add SAC: one shared compressor, a compressing retriever, an LLM that reads anchor KV.
compressor = SACCompressor()
retriever = ContextualCompressionRetriever(base_compressor=SACDocumentCompressor(compressor=compressor), base_retriever=retriever)
llm = SACLLM(compressor=compressor, max_tokens=24, stop=["\n"])

prompt = PromptTemplate.from_template(
    "Use the following pieces of context to answer the question at the end. If you don't know the answer, "
    "just say that you don't know, don't try to make up an answer.\n\n{context}\n\nQuestion: {question}\nHelpful Answer:"
)
chain = (
    {"context": retriever | (lambda ds: "\n\n".join(d.page_content for d in ds)), "question": RunnablePassthrough()}
    | prompt
    | llm
    | StrOutputParser()
)

compressor.precompress([d.page_content for d in docs])  # indexing time: every passage compressed once
for q in corpus["questions"][:4]:
    print(f"Q: {q['question']}\n   answer: {chain.invoke(q['question']).strip()!r}   (gold: {q['answers'][0]!r})")
    sources = retriever.invoke(q["question"])
    print("   sources:", [(d.id, round(d.metadata["score"], 3), original_text(d)[:40] + "...") for d in sources])
print("KV store:", compressor.store.stats())
