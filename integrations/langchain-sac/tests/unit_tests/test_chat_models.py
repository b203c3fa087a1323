"""ChatSAC: prompt rendering, markers, stop sequences, usage, token counting, streaming, threads, async."""

from __future__ import annotations

import asyncio
import time

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from pytest_socket import disable_socket, enable_socket
from sac_rag import AnchorKV
from sac_rag.chat import render_chat

from langchain_sac import ChatSAC

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class Spy:
    def __init__(self, monkeypatch, obj, name):
        self.calls, self.results = [], []
        original = getattr(obj, name)

        def wrapper(*args, **kwargs):
            self.calls.append((args, kwargs))
            out = original(*args, **kwargs)
            self.results.append(out)
            return out

        monkeypatch.setattr(obj, name, wrapper)


def printable_char(text: str) -> str:
    chars = [c for c in text[1:] if c.isprintable() and not c.isspace() and c != "\ufffd"]
    assert chars, f"no printable character in {text!r}"
    return chars[0]


def test_fallback_layout_with_system_prompt(compressor, monkeypatch):
    assert not compressor.model.tokenizer.chat_template
    spy = Spy(monkeypatch, compressor, "segments")
    chat = ChatSAC(compressor=compressor, max_tokens=4)
    chat.invoke([SystemMessage("Be brief."), HumanMessage("Where is it?"), AIMessage("Paris."), HumanMessage("When?")])
    assert spy.calls[0][0][0] == "Be brief.\n\nUser: Where is it?\nAssistant: Paris.\nUser: When?\nAssistant:"


def test_chat_template_is_applied_with_system_prompt(compressor, monkeypatch):
    monkeypatch.setattr(compressor.model.tokenizer, "chat_template", TEMPLATE)
    spy = Spy(monkeypatch, compressor, "segments")
    chat = ChatSAC(compressor=compressor, max_tokens=4)
    messages = [SystemMessage("Be brief."), HumanMessage("Where is it?")]
    chat.invoke(messages)
    prompt = spy.calls[0][0][0]
    assert prompt == "<|system|>\nBe brief.<|end|>\n<|user|>\nWhere is it?<|end|>\n<|assistant|>\n"
    assert prompt == render_chat(compressor.model.tokenizer, [{"role": "system", "content": "Be brief."},
                                                              {"role": "user", "content": "Where is it?"}])


def test_content_blocks_and_unsupported_messages(compressor, monkeypatch):
    spy = Spy(monkeypatch, compressor, "segments")
    chat = ChatSAC(compressor=compressor, max_tokens=2)
    chat.invoke([HumanMessage(content=[{"type": "text", "text": "Hello "}, "there"])])
    assert spy.calls[0][0][0] == "User: Hello there\nAssistant:"
    with pytest.raises(ValueError, match="text only"):
        chat.invoke([HumanMessage(content=[{"type": "image", "url": "https://example.com/x.png"}, "what is this?"])])
    with pytest.raises(ValueError, match="tool"):
        chat.invoke([HumanMessage("hi"), ToolMessage("42", tool_call_id="1")])


def test_markers_are_read_as_kvs(compressor, monkeypatch, docs):
    passages = compressor.compress([d.page_content for d in docs])
    spy = Spy(monkeypatch, compressor, "segments")
    chat = ChatSAC(compressor=compressor, max_tokens=4)
    msg = chat.invoke([SystemMessage("Context:\n\n" + "\n\n".join(p.marker for p in passages)), HumanMessage("Where?")])
    kvs = [s for s in spy.results[0] if isinstance(s, AnchorKV)]
    assert [kv is compressor.store.get(p.key) for kv, p in zip(kvs, passages)] == [True] * len(passages)
    assert msg.response_metadata["sac_usage"]["anchors"] == sum(p.num_anchors for p in passages)


def test_invoke_matches_the_compressor(compressor):
    chat = ChatSAC(compressor=compressor, max_tokens=10)
    msg = chat.invoke("Hello")
    out = compressor.generate("User: Hello\nAssistant:", max_new_tokens=10)
    assert isinstance(msg, AIMessage) and msg.content == out.text
    assert msg.response_metadata["finish_reason"] == out.finish_reason
    assert msg.response_metadata["model_name"].startswith("sac:")


def test_usage_metadata(compressor, docs):
    [p] = compressor.compress([docs[0].page_content])
    chat = ChatSAC(compressor=compressor, max_tokens=6)
    msg = chat.invoke(f"Read {p.marker} and answer.")
    usage = compressor.generate(f"User: Read {p.marker} and answer.\nAssistant:", max_new_tokens=6).usage
    um = msg.usage_metadata
    assert um["input_tokens"] == usage.prompt_tokens + usage.anchors
    assert um["output_tokens"] == usage.generated_tokens > 0
    assert um["total_tokens"] == um["input_tokens"] + um["output_tokens"]
    assert msg.response_metadata["sac_usage"] == usage.to_dict()


@pytest.mark.parametrize("how", ["call", "bind", "constructor"])
def test_stop_sequences_are_honoured(compressor, how):
    chat = ChatSAC(compressor=compressor, max_tokens=24)
    full = chat.invoke("Tell me a story").content
    stop = printable_char(full)
    if how == "call":
        cut = chat.invoke("Tell me a story", stop=[stop])
    elif how == "bind":
        cut = chat.bind(stop=[stop]).invoke("Tell me a story")
    else:
        cut = ChatSAC(compressor=compressor, max_tokens=24, stop=[stop]).invoke("Tell me a story")
    assert stop not in cut.content and full.startswith(cut.content) and len(cut.content) < len(full)
    assert cut.response_metadata["finish_reason"] == "stop"
    streamed = "".join(c.content for c in chat.stream("Tell me a story", stop=[stop]))
    assert streamed == cut.content


def test_get_num_tokens_uses_the_model_tokenizer_offline(compressor):
    chat = ChatSAC(compressor=compressor)
    text = "Héllo wörld, how many tokens? 🙂"
    disable_socket()  # the default would download GPT-2's tokenizer
    try:
        assert chat.get_num_tokens(text) == len(compressor.model.tokenize(text)) == len(text.encode())
        assert chat.get_token_ids(text) == compressor.model.tokenize(text)
        assert chat.get_num_tokens_from_messages([HumanMessage(text)]) > len(text.encode())
    finally:
        enable_socket()


def test_stream_last_chunk(compressor):
    chat = ChatSAC(compressor=compressor, max_tokens=12)
    chunks = list(chat.stream("Hello"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert chunks[-1].chunk_position == "last"
    assert all(c.chunk_position is None for c in chunks[:-1])
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    msg = chat.invoke("Hello")
    assert whole.content == msg.content
    assert whole.usage_metadata == msg.usage_metadata
    assert whole.response_metadata["finish_reason"] == msg.response_metadata["finish_reason"]


def test_batch_in_threads_equals_serial(compressor, docs):
    passages = compressor.compress([d.page_content for d in docs])
    chat = ChatSAC(compressor=compressor, max_tokens=8)
    prompts = [f"Question {i}: {passages[i % 3].marker} what?" for i in range(24)]
    serial = [chat.invoke(p).content for p in prompts]
    parallel = chat.batch(prompts, config={"max_concurrency": 8})
    assert [m.content for m in parallel] == serial
    assert len(set(serial)) > 1, "different prompts, different answers"


async def test_ainvoke_and_astream_match_sync(compressor):
    chat = ChatSAC(compressor=compressor, max_tokens=10)
    want = chat.invoke("Hello")
    got = await chat.ainvoke("Hello")
    assert got.content == want.content and got.usage_metadata == want.usage_metadata
    chunks = [c async for c in chat.astream("Hello")]
    assert "".join(c.content for c in chunks) == want.content
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata == want.usage_metadata
    batch = await chat.abatch(["Hello", "Hello"])
    assert [m.content for m in batch] == [want.content] * 2


def _slow(monkeypatch, model, delay=0.02):
    stream, generate = model.stream, model.generate

    def slow_stream(*args, **kwargs):
        for piece in stream(*args, **kwargs):
            time.sleep(delay)
            yield piece

    def slow_generate(*args, **kwargs):
        time.sleep(delay * 10)
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "stream", slow_stream)
    monkeypatch.setattr(model, "generate", slow_generate)


async def test_async_is_real_async(compressor, monkeypatch):
    _slow(monkeypatch, compressor.model)
    chat = ChatSAC(compressor=compressor, max_tokens=8)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    seen = []
    async for _chunk in chat.astream("Hello"):
        seen.append(ticks)
    start = ticks
    await chat.ainvoke("Hello")
    during_invoke = ticks - start
    task.cancel()
    assert seen[-1] > seen[0], f"the event loop ran while streaming: {seen}"
    assert during_invoke >= 1, "the event loop ran during ainvoke"


def test_grounded_answers_are_spans_of_the_compressed_documents(compressor, docs):
    passages = compressor.compress([d.page_content for d in docs])
    prompt = "Context:\n\n" + "\n\n".join(p.marker for p in passages) + "\n\nWhen was the tower finished?"
    chat = ChatSAC(compressor=compressor, max_tokens=6, grounded=True)
    msg = chat.invoke(prompt)
    span = msg.response_metadata["span"]
    assert msg.content == span["text"] == docs[span["passage"]].page_content[span["start"] : span["end"]]
    chunks = list(chat.stream(prompt))  # one text chunk: a span is known once it is whole
    assert "".join(c.content for c in chunks) == msg.content and chunks[-1].response_metadata["span"] == span
    assert "span" not in ChatSAC(compressor=compressor, max_tokens=6).invoke(prompt).response_metadata
    assert chat.invoke(prompt, grounded=False).response_metadata.get("span") is None
