"""Prompt markers: their alphabet, and that they survive what frameworks do to prompt text."""

from __future__ import annotations

import hashlib
import json
import re
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sac_rag.chat import render_chat
from sac_rag.markers import MARKER_RE, MarkerCodec, find_markers, neutralize, split_markers
from sac_rag.store import make_key
from tiny import byte_tokenizer

KEYS = [make_key("0123456789abcdef", hashlib.sha256(f"passage {i}".encode()).hexdigest()) for i in range(4)]
CODEC = MarkerCodec(b"s" * 32)
MARKERS = [CODEC.marker(k) for k in KEYS]
SIMPLE_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def refs(markers):
    return [m[6:-2] for m in markers]


def rebuild(pieces) -> str:
    return "".join(p if isinstance(p, str) else f"[[sac:{p[0]}]]" for p in pieces)


# ---- alphabet ------------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", MARKERS + [MarkerCodec().marker(KEYS[0])])
def test_markers_are_plain_ascii_without_separators(marker):
    assert marker.isascii() and marker.isprintable()
    for bad in " \t\n\r'\"\\.,;":
        assert bad not in marker, f"{bad!r} in {marker!r}"
    assert MARKER_RE.fullmatch(marker)
    assert len(marker) == len("[[sac:]]") + 24
    assert re.fullmatch(r"[\[\]a-z0-9:]+", marker)


def test_markers_are_keyed_and_deterministic():
    assert MarkerCodec(b"s" * 32).marker(KEYS[0]) == MARKERS[0], "same secret, same marker"
    assert MarkerCodec(b"t" * 32).marker(KEYS[0]) != MARKERS[0], "another secret, another marker"
    assert MarkerCodec().marker(KEYS[0]) != MarkerCodec().marker(KEYS[0]), "random secrets by default"
    assert len(set(MARKERS)) == len(MARKERS)
    # The ref is not the content hash or any part of the key: knowing the text does not give the marker.
    for key, marker in zip(KEYS, MARKERS):
        assert marker[6:-2] not in key
    with pytest.raises(ValueError):
        MarkerCodec(b"short")
    with pytest.raises(ValueError):
        MarkerCodec("not bytes but long enough")  # type: ignore[arg-type]


# ---- survival ------------------------------------------------------------------------------------


def test_repr_and_json_keep_markers():
    text = "Context:\n" + MARKERS[0] + "\n\n" + MARKERS[1] + "\nQuestion: 'why'?"
    for transformed in (repr(text), repr([text]), str({"context": text}), json.dumps(text), json.dumps({"t": [text]})):
        assert find_markers(transformed) == refs(MARKERS[:2]), transformed
    assert repr(MARKERS[0]) == "'" + MARKERS[0] + "'", "repr escapes nothing in a marker"


def test_joins_keep_markers():
    assert find_markers("".join(MARKERS)) == refs(MARKERS), "adjacent markers stay apart"
    assert find_markers("\n\n".join(MARKERS)) == refs(MARKERS)
    assert find_markers(", ".join(MARKERS)) == refs(MARKERS)
    assert find_markers(" ".join(f"[{i}] {m}" for i, m in enumerate(MARKERS))) == refs(MARKERS)
    assert split_markers("".join(MARKERS)) == [(r,) for r in refs(MARKERS)]


def test_splitting_into_words_and_rejoining_keeps_markers():
    text = f"Some context. {MARKERS[0]} More text,\n{MARKERS[1]}\tand the end."
    for words in (text.split(), text.split(" "), re.split(r"(\s+)", text), re.split(r"(?<=[.!?])\s+", text)):
        assert sum(len(find_markers(w)) for w in words) == 2, "no marker is cut between pieces"
        assert find_markers(" ".join(words)) == refs(MARKERS[:2])
        assert find_markers("\n".join(words)) == refs(MARKERS[:2])
    # Splitting at punctuation or quotes (sentence splitters, CSV-ish tools) never cuts a marker: it has none.
    for sep in ".,;!?'\"\\()":
        pieces = text.split(sep)
        assert sum(len(find_markers(p)) for p in pieces) == 2
        assert find_markers(sep.join(pieces)) == refs(MARKERS[:2])


def test_metadata_headers_keep_markers():
    header = "source: notes/file.txt\npage: 3\n\n"
    assert split_markers(header + MARKERS[0]) == [header, (refs(MARKERS)[0],)]
    text = "\n\n".join(f"file_path: doc{i}.md\n\n{m}" for i, m in enumerate(MARKERS))
    assert find_markers(text) == refs(MARKERS)


@pytest.mark.parametrize("template", [None, SIMPLE_TEMPLATE], ids=["fallback", "jinja"])
def test_chat_rendering_keeps_markers(template):
    tok = byte_tokenizer()
    tok.chat_template = template
    messages = [
        {"role": "system", "content": f"Answer from the context.\n\n{MARKERS[0]}\n\n{MARKERS[1]}"},
        {"role": "user", "content": f"What does {MARKERS[2]} say?"},
        {"role": "assistant", "content": "It says hello."},
        {"role": "user", "content": "And this one: " + MARKERS[3]},
    ]
    prompt = render_chat(tok, messages)
    assert find_markers(prompt) == refs(MARKERS)
    assert ("<|system|>" in prompt) == (template is not None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.text(), suffix=st.text(), which=st.integers(0, len(MARKERS) - 1))
def test_arbitrary_surrounding_text_keeps_a_marker(prefix, suffix, which):
    assume(not find_markers(prefix) and not find_markers(suffix))
    marker = MARKERS[which]
    text = prefix + marker + suffix
    assert find_markers(text) == [refs(MARKERS)[which]]
    pieces = split_markers(text)
    assert rebuild(pieces) == text
    assert [p for p in pieces if isinstance(p, str)] == [s for s in (prefix, suffix) if s]
    assert find_markers(repr(text)) == [refs(MARKERS)[which]]


_FRAGMENTS = st.lists(
    st.sampled_from(["[", "]", "[[", "]]", "sac", "SAC", "Sac", ":", " ", "\n", "-", "0", "a", "f", "x", "0123456789abcdef01234567",
                     *MARKERS]),
    max_size=30,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(prefix=_FRAGMENTS, suffix=_FRAGMENTS)
def test_markers_next_to_marker_like_text(prefix, suffix):
    expected = find_markers(prefix) + [refs(MARKERS)[0]] + find_markers(suffix)
    text = prefix + MARKERS[0] + suffix
    assert find_markers(text) == expected
    assert rebuild(split_markers(text)) == text


# ---- splitting and neutralizing ------------------------------------------------------------------


def test_split_markers():
    assert split_markers("") == []
    assert split_markers("no markers here") == ["no markers here"]
    r = refs(MARKERS)
    assert split_markers(f"a{MARKERS[0]}b{MARKERS[1]}") == ["a", (r[0],), "b", (r[1],)]
    # Near misses are text.
    for near in ("[[sac:" + "0" * 23 + "]]", "[[sac:" + "0" * 25 + "]]", "[[sac:" + "G" * 24 + "]]", "[[SAC:" + "0" * 24 + "]]",
                 "[[ sac:" + "0" * 24 + "]]", "[sac:" + "0" * 24 + "]", "[[sac:" + "0" * 24 + "]"):
        assert split_markers(near) == [near]


@pytest.mark.parametrize(
    "text",
    [
        MARKERS[0],
        f"see {MARKERS[1]} and {MARKERS[2]}",
        "[[SAC:" + "0" * 24 + "]]",
        "[[ sac : 0123 ]]",
        "[[\tSaC\n:xyz",
        "[[[[sac:" + "a" * 24 + "]]]]",
    ],
)
def test_neutralize_breaks_anything_marker_like(text):
    out = neutralize(text)
    assert find_markers(out) == []
    assert not re.search(r"\[\[\s*sac\s*:", out, re.IGNORECASE)
    assert neutralize(out) == out, "idempotent"
    # What the marker stood for is still readable.
    assert out.replace("[[sac-text:", "[[sac:") == re.sub(r"\[\[\s*sac\s*:", "[[sac:", text, flags=re.IGNORECASE)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _FRAGMENTS, st.text(alphabet=string.printable)))
def test_neutralized_text_never_holds_a_marker(text):
    out = neutralize(text)
    assert find_markers(out) == []
    if not re.search(r"\[\[\s*sac\s*:", text, re.IGNORECASE):
        assert out == text, "text without anything marker-like is unchanged"
