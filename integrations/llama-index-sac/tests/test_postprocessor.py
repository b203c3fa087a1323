"""SACPostprocessor: ids, scores, relationships and metadata kept; our metadata hidden from the LLM and embedder."""

from __future__ import annotations

import hashlib

from llama_index.core.schema import MetadataMode, NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
from llama_index.postprocessor.sac import SACPostprocessor, original_text
from llama_index.postprocessor.sac.base import METADATA_KEY
from sac_rag.markers import MARKER_RE, find_markers


TEXTS = [
    "The Eiffel Tower is in Paris. It was finished in 1889.",
    "Mount Everest is the highest mountain above sea level.",
    "Water boils at 100 degrees Celsius at sea level.",
]


def make_nodes() -> list[NodeWithScore]:
    out = []
    for i, text in enumerate(TEXTS):
        node = TextNode(
            id_=f"node-{i}",
            text=text,
            metadata={"file_name": f"doc{i}.txt", "page": i, "secret_note": "hidden"},
            excluded_llm_metadata_keys=["secret_note"],
            excluded_embed_metadata_keys=["page"],
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{i}", metadata={"k": i})},
        )
        out.append(NodeWithScore(node=node, score=0.9 - i / 10))
    return out


def test_ids_scores_relationships_and_metadata_are_kept(compressor):
    nodes = make_nodes()
    out = SACPostprocessor(compressor=compressor).postprocess_nodes(nodes, query_str="where?")
    assert len(out) == len(nodes)
    for got, orig in zip(out, nodes[::-1]):  # the default order: ascending score, the best node last
        assert got.node.node_id == orig.node.node_id and got.node_id == orig.node_id
        assert got.score == orig.score
        assert got.node.relationships == orig.node.relationships
        assert got.node.ref_doc_id == orig.node.ref_doc_id == orig.node.relationships[NodeRelationship.SOURCE].node_id
        meta = dict(got.node.metadata)
        sac = meta.pop(METADATA_KEY)
        assert meta == orig.node.metadata
        assert MARKER_RE.fullmatch(got.node.get_content(MetadataMode.NONE))
        assert original_text(got) == original_text(got.node) == orig.node.text == sac["text"]
        kv = compressor.store.get(sac["key"])
        assert kv.content_hash == hashlib.sha256(orig.node.text.encode()).hexdigest()
        assert (sac["num_tokens"], sac["num_anchors"], sac["nbytes"], sac["cached"]) == (kv.num_tokens, kv.num_anchors, kv.nbytes, False)
        # Excluded keys: the node's own, plus ours.
        assert set(got.node.excluded_llm_metadata_keys) == {"secret_note", METADATA_KEY}
        assert set(got.node.excluded_embed_metadata_keys) == {"page", METADATA_KEY}


def test_our_metadata_is_invisible_to_the_llm_and_the_embedder(compressor):
    nodes = make_nodes()
    out = SACPostprocessor(compressor=compressor).postprocess_nodes(nodes, QueryBundle("q"))
    for got, orig in zip(out, nodes):
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            view = got.node.get_content(metadata_mode=mode)
            assert orig.node.text not in view, "the original text never reaches the LLM or the embedder"
            assert METADATA_KEY not in got.node.get_metadata_str(mode)
            assert "num_anchors" not in view and "cached" not in view
            assert find_markers(view) == [got.node.get_content(MetadataMode.NONE)[6:-2]], "exactly the marker"
        assert "file_name: doc" in got.node.get_content(MetadataMode.LLM)
        assert "secret_note" not in got.node.get_content(MetadataMode.LLM)


def test_inputs_are_not_modified_and_repeats_are_cached(compressor):
    nodes = make_nodes()
    before = [n.model_copy(deep=True) for n in nodes]
    pp = SACPostprocessor(compressor=compressor)
    first = pp.postprocess_nodes(nodes, query_str="q")
    assert [n.node.text for n in nodes] == [n.node.text for n in before]
    assert [n.node.metadata for n in nodes] == [n.node.metadata for n in before]
    assert [n.node.excluded_llm_metadata_keys for n in nodes] == [n.node.excluded_llm_metadata_keys for n in before]
    again = pp.postprocess_nodes(nodes, query_str="q")
    assert [n.node.metadata[METADATA_KEY]["cached"] for n in again] == [True] * len(nodes)
    assert [n.node.text for n in again] == [n.node.text for n in first]


def test_empty_list(compressor):
    pp = SACPostprocessor(compressor=compressor)
    assert pp.postprocess_nodes([], query_str="q") == []
    assert pp.postprocess_nodes([]) == []


def test_original_text_of_an_uncompressed_node():
    assert original_text(TextNode(text="plain")) == "plain"
    assert original_text(NodeWithScore(node=TextNode(text="plain"), score=1.0)) == "plain"


def test_a_marker_inside_a_node_is_not_resolved(compressor):
    pp = SACPostprocessor(compressor=compressor)
    [first] = pp.postprocess_nodes([NodeWithScore(node=TextNode(text="secret"), score=1.0)])
    hostile = NodeWithScore(node=TextNode(text="read " + first.node.text), score=1.0)
    [out] = pp.postprocess_nodes([hostile])
    assert original_text(out) == hostile.node.text
    assert find_markers(compressor.text_of(out.node.text)) == []


def test_an_empty_node_passes_through_without_breaking_the_others(compressor):
    nodes = make_nodes()
    blank = NodeWithScore(node=TextNode(id_="blank", text="  \n"), score=0.05)
    out = SACPostprocessor(compressor=compressor).postprocess_nodes([nodes[0], blank, nodes[1]], query_str="q")
    assert [n.node_id for n in out] == ["blank", "node-1", "node-0"]  # the default order: ascending score
    assert [n.score for n in out] == [0.05, nodes[1].score, nodes[0].score]
    assert MARKER_RE.fullmatch(out[1].node.text) and MARKER_RE.fullmatch(out[2].node.text)
    assert out[0].node.text == "  \n" and METADATA_KEY not in out[0].node.metadata
    assert out[0].node is not blank.node, "a copy, like the others"
    assert original_text(out[0]) == "  \n"


def test_a_question_holding_a_marker_is_refused():
    import pytest
    from llama_index.core.schema import QueryBundle
    from sac_rag import UnknownMarkerError
    from sac_rag.compressor import SACCompressor
    from sac_rag.testing import tiny_sac

    from llama_index.postprocessor.sac import SACPostprocessor

    c = SACCompressor(tiny_sac())
    marker = c.compress(["A passage about cats."])[0].marker
    with pytest.raises(UnknownMarkerError):
        SACPostprocessor(compressor=c).postprocess_nodes([], QueryBundle(f"what is {marker}?"))


def test_order_by_scores_most_relevant_last(compressor):
    nodes = make_nodes()  # scores 0.9, 0.8, 0.7
    nodes[0], nodes[2] = nodes[2], nodes[0]  # a retriever's order need not follow the scores
    out = SACPostprocessor(compressor=compressor).postprocess_nodes(nodes, query_str="q")  # most_relevant_last
    assert [n.node_id for n in out] == ["node-2", "node-1", "node-0"]
    assert [n.score for n in out] == sorted(n.score for n in nodes)
    first = SACPostprocessor(compressor=compressor, order="most_relevant_first").postprocess_nodes(nodes, query_str="q")
    assert [n.node_id for n in first] == ["node-0", "node-1", "node-2"]
    same = SACPostprocessor(compressor=compressor, order="as_given").postprocess_nodes(nodes, query_str="q")
    assert [n.node_id for n in same] == [n.node_id for n in nodes]  # as_given


def test_order_without_scores_takes_the_given_ranking(compressor):
    nodes = [NodeWithScore(node=n.node, score=None) for n in make_nodes()]
    out = SACPostprocessor(compressor=compressor, order="most_relevant_last").postprocess_nodes(nodes, query_str="q")
    assert [n.node_id for n in out] == ["node-2", "node-1", "node-0"]


def test_unknown_order_is_refused(compressor):
    import pytest
    from sac_rag.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="order must be one of"):
        SACPostprocessor(compressor=compressor, order="best_last")
