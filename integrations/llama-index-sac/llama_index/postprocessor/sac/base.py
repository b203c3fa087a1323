"""SACPostprocessor: LlamaIndex's node-postprocessor face of an SACCompressor."""

from __future__ import annotations

from typing import List, Optional

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from sac_rag.compressor import SACCompressor
from sac_rag.ordering import check_order, prompt_order

METADATA_KEY = "sac"


class SACPostprocessor(BaseNodePostprocessor):
    """Compress each retrieved node into anchor KV; its text becomes a marker the ``SAC`` LLM resolves.

    ``order`` places the nodes for the prompt (``sac_rag.ordering``): ranked by their scores when every node has
    one, else taken as ranked already (most relevant first); ``"most_relevant_last"`` puts the best one nearest the
    question."""

    _compressor: SACCompressor = PrivateAttr()
    _order: str = PrivateAttr()

    def __init__(self, compressor: Optional[SACCompressor] = None, order: str = "most_relevant_last", **kwargs) -> None:
        super().__init__(**kwargs)
        self._compressor = compressor if compressor is not None else SACCompressor()
        self._order = check_order(order)

    @property
    def order(self) -> str:
        return self._order

    @property
    def compressor(self) -> SACCompressor:
        return self._compressor

    @classmethod
    def class_name(cls) -> str:
        return "SACPostprocessor"

    def _postprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        if query_bundle is not None:
            self._compressor.check_query(query_bundle.query_str)
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        # An empty or whitespace-only node has nothing to compress: it passes through as it is, rather than
        # failing the whole query.
        todo = [i for i, t in enumerate(texts) if t.strip()]
        results = dict(zip(todo, self._compressor.compress([texts[i] for i in todo]) if todo else []))
        out = []
        for i, (n, text) in enumerate(zip(nodes, texts)):
            res = results.get(i)
            if res is None:
                out.append(NodeWithScore(node=n.node.model_copy(deep=True), score=n.score))
                continue
            node = n.node.model_copy(deep=True)
            node.set_content(res.marker)
            node.metadata[METADATA_KEY] = {**res.to_dict(), "text": text}
            for excluded in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                if METADATA_KEY not in excluded:
                    excluded.append(METADATA_KEY)
            out.append(NodeWithScore(node=node, score=n.score))
        scores = [n.score for n in nodes]
        return [out[i] for i in prompt_order(len(out), None if None in scores else scores, self._order)]


def original_text(node) -> str:
    """The text a compressed node stood for (its own text if it was not compressed)."""
    inner = getattr(node, "node", node)
    return inner.metadata.get(METADATA_KEY, {}).get("text", inner.get_content(metadata_mode=MetadataMode.NONE))
