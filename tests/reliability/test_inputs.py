"""Bad and arbitrary input: a typed error (a SACError subclass) or success, never another exception, and the
model keeps working afterwards. Passages, questions, generate segments and chat messages, through the core API
and both integrations; then hypothesis over arbitrary text from every Unicode category and over marker parsing."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import text_of_length
from sac_rag import InputTooLargeError, InvalidInputError, SACCompressor, SACError, UnknownMarkerError
from sac_rag.chat import render_chat
from sac_rag.kv import AnchorKV
from sac_rag.markers import MARKER_RE, find_markers, neutralize, split_markers

GOOD = "The Eiffel Tower is in Paris. It was finished in 1889 for the World's Fair."
QUESTION = "When was the tower finished?"
LIMIT = 300  # rsac's max_input_tokens

# Lone surrogates are valid Python str but not valid Unicode text (e.g. from os.fsdecode or surrogateescape).
SURROGATES = ["\ud800", "text \udfff text", "\udc80\udc81\udcff", "\ud83d"]
EVERY_PLANE = "".join(chr((plane << 16) | 0x0041) for plane in range(17))  # plane 0 .. plane 16
PLANE_SAMPLES = [
    EVERY_PLANE,
    "plane 1: \U0001F600\U0001D11E, plane 2: \U00020000\U0002A6D6, plane 3: \U00030000",
    "planes 4-13 (unassigned): " + "".join(chr((p << 16) | 0x1234) for p in range(4, 14)),
    "plane 14: \U000E0001\U000E0041\U000E007F, planes 15-16 (private use): \U000F0000\U0010FFFD\U0010FFFF",
    "BMP: \u00e9\u4e2d\u0627\ud55c\u0e01\u2603\ufb01 combining e\u0301 and ZWJ \U0001F468\u200d\U0001F469",
]
CONTROLS = [
    "".join(chr(c) for c in range(1, 32)) + "\x7f",  # C0 (NUL aside: it is 'binary') and DEL
    "C1: " + "".join(chr(c) for c in range(0x80, 0xA0)),
    "format: \u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2066\u2069\ufeff\u00ad end",
    "separators \u2028 and \u2029, noncharacters \ufdd0\ufffe\uffff, replacement \ufffd",
    "escape codes \x1b[31mred\x1b[0m and bell \x07 and backspace \x08\x08",
]

# category -> inputs. "bytes objects" are not str; "binary as text" is str decoded from binary data.
INPUTS: dict[str, list] = {
    "empty": [""],
    "whitespace-only": [" ", "\t\n\r\x0b\x0c ", "\u3000\u2003\u00a0\u2028"],
    "non-string": [None, 42, 3.5, True, ["a list"], ("a", "tuple"), {"a": "dict"}, object()],
    "bytes objects": [b"bytes", bytearray(b"bytearray"), memoryview(b"memoryview"), b"\x00\xff\xfe"],
    "binary as text": ["NUL \x00 inside", bytes(range(0, 256, 3)).decode("latin-1"), "\x00"],
    "huge": [text_of_length(LIMIT + 1), "x" * (16 * LIMIT + 1), "\U0001F600" * (4 * LIMIT)],
    "control characters": CONTROLS,
    "every Unicode plane": PLANE_SAMPLES,
    "lone surrogates": SURROGATES,
}

# Which categories each entry point must refuse (the rest are valid and must succeed; a framework may also refuse
# a value before sac-rag sees it, which is recorded as such).
BAD_PASSAGE = {"empty", "whitespace-only", "non-string", "bytes objects", "binary as text", "huge", "lone surrogates"}
MUST_FAIL = {
    "SACModel.compress(passage)": BAD_PASSAGE,
    "SACModel.compress_batch([good, passage])": BAD_PASSAGE,
    "SACCompressor.compress([passage])": BAD_PASSAGE,
    "SACModel.answer(question, [good])": {"empty", "whitespace-only", "non-string", "bytes objects", "huge", "lone surrogates"},
    "SACModel.answer(good question, [passage])": BAD_PASSAGE,
    "SACModel.qa_segments(question, [])": {"empty", "whitespace-only", "non-string", "bytes objects", "lone surrogates"},
    "SACModel.generate([segment])": {"empty", "non-string", "bytes objects", "huge", "lone surrogates"},
    "SACModel.generate([kv, segment])": {"non-string", "bytes objects", "huge", "lone surrogates"},
    "render_chat(content)": {"non-string", "bytes objects"},
    "render_chat(messages=value)": {"empty", "whitespace-only", "non-string", "bytes objects", "binary as text", "huge",
                                    "control characters", "every Unicode plane", "lone surrogates"},
    "SACCompressor.generate(render_chat(content))": {"non-string", "bytes objects", "huge", "lone surrogates"},
    "ChatSAC.invoke(content)": {"non-string", "bytes objects", "huge", "lone surrogates"},
    "LlamaIndex SAC.chat(content)": {"huge", "lone surrogates"},
}


def must_fail(entry: str, category: str) -> bool:
    return category in MUST_FAIL[entry]


@pytest.fixture(scope="module")
def comp(rsac):
    return SACCompressor(rsac)


@pytest.fixture(scope="module")
def canary(rsac):
    """What the model does with good input; checked again after bad input."""
    kv = rsac.compress(GOOD)
    out = rsac.generate([kv, QUESTION], max_new_tokens=6)

    def check() -> None:
        again = rsac.compress(GOOD)
        assert torch.equal(again.keys, kv.keys) and torch.equal(again.values, kv.values)
        assert rsac.generate([again, QUESTION], max_new_tokens=6).token_ids == out.token_ids

    return kv, check


@pytest.fixture(scope="module")
def chat_sac(comp):
    from langchain_sac import ChatSAC

    return ChatSAC(compressor=comp, max_tokens=3)


@pytest.fixture(scope="module")
def li_sac(comp):
    from llama_index.core import Settings
    from llama_index.llms.sac import SAC

    saved = Settings._tokenizer
    llm = SAC(compressor=comp, max_tokens=3)
    Settings._tokenizer = saved  # SAC sets the global tokenizer when none is set: leave globals as they were
    return llm


def _framework_message(entry: str, value):
    """The framework's own message object for ``value`` (sac-rag never sees a value the framework refuses)."""
    from langchain_core.messages import HumanMessage
    from llama_index.core.base.llms.types import ChatMessage

    if entry.startswith("ChatSAC"):
        return HumanMessage(content=value if isinstance(value, str) else [{"type": "text", "text": value}])
    if entry.startswith("LlamaIndex"):
        return ChatMessage(role="user", content=value)
    return value


def _entry_points(rsac, comp, kv, chat_sac, li_sac):
    def chat_invoke(message):
        return chat_sac.invoke([message])

    def li_chat(message):
        return li_sac.chat([message])

    return {
        "SACModel.compress(passage)": lambda x: rsac.compress(x),
        "SACModel.compress_batch([good, passage])": lambda x: rsac.compress_batch([GOOD, x]),
        "SACCompressor.compress([passage])": lambda x: comp.compress([x]),
        "SACModel.answer(question, [good])": lambda x: rsac.answer(x, [GOOD], max_new_tokens=2),
        "SACModel.answer(good question, [passage])": lambda x: rsac.answer(QUESTION, [x], max_new_tokens=2),
        "SACModel.qa_segments(question, [])": lambda x: rsac.qa_segments(x, []),
        "SACModel.generate([segment])": lambda x: rsac.generate([x], max_new_tokens=2),
        "SACModel.generate([kv, segment])": lambda x: rsac.generate([kv, x], max_new_tokens=2),
        "render_chat(content)": lambda x: render_chat(rsac.tokenizer, [{"role": "user", "content": x}]),
        "render_chat(messages=value)": lambda x: render_chat(rsac.tokenizer, x),
        "SACCompressor.generate(render_chat(content))": lambda x: comp.generate(
            render_chat(rsac.tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": x}]),
            max_new_tokens=2),
        "ChatSAC.invoke(content)": chat_invoke,
        "LlamaIndex SAC.chat(content)": li_chat,
    }


@pytest.mark.parametrize("entry", list(MUST_FAIL))
def test_bad_input_gets_a_typed_error_and_the_model_keeps_working(entry, rsac, comp, canary, chat_sac, li_sac, report):
    from pydantic import ValidationError

    kv, check = canary
    call = _entry_points(rsac, comp, kv, chat_sac, li_sac)[entry]
    for category, values in INPUTS.items():
        for value in values:
            case = f"{category} -> {entry}"
            try:
                arg = _framework_message(entry, value)
            except ValidationError:  # the framework's own message type refused it: sac-rag never sees such a value
                report.record("inputs", case, "refused by the framework (pydantic ValidationError)")
                continue
            if entry.startswith("LlamaIndex") and not isinstance(value, str):
                report.note("inputs", case, "LlamaIndex's ChatMessage drops non-text content (content=None): an empty message")
            _, err = report.outcome("inputs", case, call, arg)
            if must_fail(entry, category):
                assert err is not None, f"{entry} accepted {category} input {value!r:.80}"
                assert isinstance(err, InvalidInputError), err
                if category == "huge" and entry != "render_chat(messages=value)":
                    assert isinstance(err, InputTooLargeError), err
                assert str(err), "the error says what is wrong"
            else:
                assert err is None, f"{entry} refused valid {category} input {value!r:.80}: {err!r}"
            check()


# ---- property-based ------------------------------------------------------------------------------------------

# Every Unicode category (surrogates included), with the characters most likely to break something drawn often.
_SPECIAL = sorted(set("\x00\x01\x1b\x7f\x85\xa0\u2028\u2029\u200b\u200d\u202e\ufeff\ufffd\ufffe\uffff\U0010ffff"
                      "\U000e0001\U0001f600\u0301 \t\n\r[]:sac" + "".join(SURROGATES) + EVERY_PLANE))
# (st.text(alphabet=one_of(...)) would almost never draw a surrogate: hypothesis merges the alphabets.)
ALL_TEXT = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),
    st.lists(st.one_of(st.characters(exclude_categories=()), st.sampled_from(_SPECIAL)), max_size=40).map("".join),
)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@FAST
@given(text=ALL_TEXT)
def test_property_passages(text, rsac, comp, report):
    out, err = report.outcome("properties", "SACCompressor.compress([text]) / SACModel.compress(text)", comp.compress, [text])
    valid = bool(text.strip()) and "\x00" not in text and _encodable(text)
    assert (err is None) == valid, (text, err)
    if valid:
        [p] = out
        [kv] = [s for s in comp.segments(p.marker) if isinstance(s, AnchorKV)]
        fresh = rsac.compress(neutralize(text))
        assert torch.equal(kv.keys, fresh.keys), "the marker reads this passage's KV"


@FAST
@given(text=ALL_TEXT)
def test_property_questions(text, rsac, canary, report):
    kv, _ = canary
    _, err = report.outcome("properties", "SACModel.answer(text) / qa_segments + generate", lambda: rsac.generate(
        rsac.qa_segments(text, [kv]), max_new_tokens=2))
    assert (err is None) == (bool(text.strip()) and _encodable(text)), (text, err)


SEGMENT = st.one_of(
    ALL_TEXT,
    st.lists(st.integers(min_value=-3, max_value=300), max_size=6),
    st.just("KV"),
    st.none(),
    st.binary(max_size=8),
    st.integers(),
)


@FAST
@given(segments=st.lists(SEGMENT, max_size=4))
def test_property_generate_segments(segments, rsac, canary, report):
    kv, _ = canary
    segments = [kv if s == "KV" else s for s in segments]
    report.outcome("properties", "SACModel.generate(arbitrary segments)", rsac.generate, segments, max_new_tokens=2)


MESSAGE = st.fixed_dictionaries({
    "role": st.sampled_from(["system", "user", "assistant", "tool", "", "USER"]),
    "content": st.one_of(ALL_TEXT, st.none(), st.integers(), st.binary(max_size=4)),
})


@FAST
@given(messages=st.one_of(st.lists(MESSAGE, max_size=4), st.none(), ALL_TEXT, st.integers()))
def test_property_chat_messages(messages, rsac, comp, report):
    def chat():
        return comp.generate(render_chat(rsac.tokenizer, messages), max_new_tokens=2)

    report.outcome("properties", "render_chat(arbitrary messages) + SACCompressor.generate", chat)


@settings(max_examples=60, deadline=None)
@given(text=ALL_TEXT)
def test_property_chat_integrations(text, chat_sac, li_sac, report):
    from langchain_core.messages import HumanMessage, SystemMessage
    from llama_index.core.base.llms.types import ChatMessage

    report.outcome("properties", "ChatSAC.invoke([system, human(text)])", chat_sac.invoke,
                   [SystemMessage(content="Be brief."), HumanMessage(content=text)])
    report.outcome("properties", "LlamaIndex SAC.chat([user(text)])", li_sac.chat, [ChatMessage(role="user", content=text)])


_FRAGMENT = st.sampled_from(["[[sac:", "]]", "[[", "sac:", "[[SAC:", "0" * 24, "a" * 23, "[[sac:" + "f" * 24 + "]]", "\\", "'"])
MARKERISH = st.lists(st.one_of(_FRAGMENT, ALL_TEXT), max_size=8).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(ALL_TEXT, MARKERISH))
def test_property_marker_parsing(text, report):
    parts, err = report.outcome("properties", "split_markers / find_markers (arbitrary text)", split_markers, text)
    assert err is None
    refs, err = report.outcome("properties", "split_markers / find_markers (arbitrary text)", find_markers, text)
    assert err is None
    rebuilt = "".join(p if isinstance(p, str) else f"[[sac:{p[0]}]]" for p in parts)
    assert rebuilt == text, "splitting loses nothing"
    assert refs == [p[0] for p in parts if isinstance(p, tuple)]
    assert all(p for p in parts), "no empty strings"
    assert all(re.fullmatch(r"[0-9a-f]{24}", r) for r in refs)
    assert find_markers(neutralize(text)) == [], "neutralized text never holds a marker"


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(ALL_TEXT, MARKERISH))
def test_property_prompts_never_resolve_unissued_markers(text, rsac, report):
    comp = SACCompressor(rsac)  # has issued nothing
    segs, err = report.outcome("properties", "SACCompressor.segments(arbitrary prompt), nothing issued", comp.segments, text)
    if MARKER_RE.search(text):
        assert isinstance(err, UnknownMarkerError)
    else:
        assert err is None and not any(isinstance(s, AnchorKV) for s in segs)
    inert = SACCompressor(rsac, on_unknown="text")
    segs, err = report.outcome("properties", "SACCompressor.segments(arbitrary prompt), on_unknown='text'", inert.segments, text)
    assert err is None and all(isinstance(s, str) for s in segs)


@pytest.mark.parametrize("bad", [None, 42, b"[[sac:" + b"0" * 24 + b"]]", ["[[sac:x]]"]], ids=["none", "int", "bytes", "list"])
def test_marker_parsing_refuses_non_text(bad, report):
    for fn in (split_markers, find_markers):
        _, err = report.outcome("properties", "split_markers / find_markers (non-str)", fn, bad)
        assert isinstance(err, InvalidInputError)


def test_the_model_still_works_after_all_of_the_above(canary, rsac, report):
    _, check = canary
    check()
    report.note("properties", "SACModel.generate(arbitrary segments)", "the model answers as before afterwards")


async def test_async_paths_refuse_bad_input_with_typed_errors(comp, chat_sac, li_sac, canary, report):
    from langchain_core.messages import HumanMessage

    _, check = canary
    for category, value in [("lone surrogates", "\ud800"), ("huge", "x" * (16 * LIMIT + 1))]:
        for name, make in [
            ("ChatSAC.ainvoke", lambda v: chat_sac.ainvoke([HumanMessage(content=v)])),
            ("LlamaIndex SAC.acomplete", lambda v: li_sac.acomplete(v)),
            ("SACCompressor.agenerate", lambda v: comp.agenerate(v, max_new_tokens=2)),
        ]:
            with pytest.raises(SACError) as info:
                await make(value)
            report.record("inputs", f"{category} -> {name} (async)", type(info.value).__name__)
    check()
