"""The SAC LlamaIndex LLM: every entry point, usage in response.raw, stop strings, real async."""

from __future__ import annotations

import asyncio
import time

import pytest
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.llms.sac import SAC
from sac_rag import AnchorKV


def check_usage(raw: dict, out) -> None:
    usage = raw["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert usage["prompt_tokens"] == out.usage.prompt_tokens + out.usage.anchors
    assert usage["completion_tokens"] == out.usage.generated_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert raw["sac_usage"] == out.usage.to_dict()
    assert raw["finish_reason"] == out.finish_reason


@pytest.fixture
def passage(compressor):
    [p] = compressor.compress(["The Eiffel Tower is in Paris and was finished in 1889."])
    return p


@pytest.fixture
def llm(compressor):
    return SAC(compressor=compressor, max_tokens=10)


def test_metadata_and_tokenizer(llm, compressor):
    meta = llm.metadata
    assert meta.num_output == 10 and meta.context_window == 8192 and not meta.is_chat_model
    assert meta.model_name.startswith("sac:")
    assert llm.compressor is compressor
    assert Settings.tokenizer("héllo") == compressor.model.tokenize("héllo"), "token counting uses the model's tokenizer"


def test_complete(llm, compressor, passage):
    prompt = f"Context: {passage.marker}\nQ: where?\nA:"
    want = compressor.generate(prompt, max_new_tokens=10)
    resp = llm.complete(prompt)
    assert resp.text == want.text
    check_usage(resp.raw, want)
    assert resp.raw["usage"]["prompt_tokens"] > passage.num_anchors


def test_stream_complete(llm, compressor, passage):
    prompt = f"Context: {passage.marker}\nQ:"
    want = compressor.generate(prompt, max_new_tokens=10)
    responses = list(llm.stream_complete(prompt))
    assert "".join(r.delta for r in responses) == want.text == responses[-1].text
    check_usage(responses[-1].raw, want)


def test_chat_and_stream_chat(llm, compressor, passage):
    messages = [ChatMessage(role=MessageRole.SYSTEM, content=f"Use this: {passage.marker}"),
                ChatMessage(role=MessageRole.USER, content="Where is it?")]
    prompt = f"Use this: {passage.marker}\n\nUser: Where is it?\nAssistant:"
    want = compressor.generate(prompt, max_new_tokens=10)
    resp = llm.chat(messages)
    assert resp.message.role == MessageRole.ASSISTANT and resp.message.content == want.text
    check_usage(resp.raw, want)
    stream = list(llm.stream_chat(messages))
    assert stream[-1].message.content == want.text == "".join(r.delta for r in stream)
    check_usage(stream[-1].raw, want)


def test_stop_and_kwargs(llm, compressor):
    full = llm.complete("Once upon a time", max_tokens=24).text
    stop = next(c for c in full[1:] if c.isprintable() and not c.isspace() and c != "\ufffd")
    cut = llm.complete("Once upon a time", max_tokens=24, stop=[stop]).text
    assert stop not in cut and full.startswith(cut)
    assert SAC(compressor=compressor, max_tokens=24, stop=[stop]).complete("Once upon a time").text == cut
    assert len(llm.complete("Once upon a time", max_tokens=3).raw["sac_usage"]) > 0
    assert llm.complete("Once upon a time", max_tokens=3).raw["usage"]["completion_tokens"] <= 3


def test_token_counting_handler_reads_usage(compressor, passage):
    counter = TokenCountingHandler(tokenizer=compressor.model.tokenize)
    llm = SAC(compressor=compressor, max_tokens=6, callback_manager=CallbackManager([counter]))
    resp = llm.complete(f"{passage.marker} Q:")
    assert counter.prompt_llm_token_count == resp.raw["usage"]["prompt_tokens"]
    assert counter.completion_llm_token_count == resp.raw["usage"]["completion_tokens"]


async def test_async_entry_points(llm, compressor, passage):
    prompt = f"Context: {passage.marker}\nQ:"
    want = compressor.generate(prompt, max_new_tokens=10)
    resp = await llm.acomplete(prompt)
    assert resp.text == want.text
    check_usage(resp.raw, want)
    responses = [r async for r in await llm.astream_complete(prompt)]
    assert responses[-1].text == want.text == "".join(r.delta for r in responses)
    check_usage(responses[-1].raw, want)

    messages = [ChatMessage(role=MessageRole.USER, content=f"Read {passage.marker}")]
    chat_want = compressor.generate(f"User: Read {passage.marker}\nAssistant:", max_new_tokens=10)
    resp = await llm.achat(messages)
    assert resp.message.content == chat_want.text
    check_usage(resp.raw, chat_want)
    stream = [r async for r in await llm.astream_chat(messages)]
    assert stream[-1].message.content == chat_want.text
    check_usage(stream[-1].raw, chat_want)


async def test_async_does_not_block_the_event_loop(llm, compressor, monkeypatch):
    stream, generate = compressor.model.stream, compressor.model.generate

    def slow_stream(*a, **k):
        for piece in stream(*a, **k):
            time.sleep(0.02)
            yield piece

    def slow_generate(*a, **k):
        time.sleep(0.2)
        return generate(*a, **k)

    monkeypatch.setattr(compressor.model, "stream", slow_stream)
    monkeypatch.setattr(compressor.model, "generate", slow_generate)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    messages = [ChatMessage(role=MessageRole.USER, content="hi")]
    progress = {}
    for name, call in [("acomplete", lambda: llm.acomplete("hi")), ("achat", lambda: llm.achat(messages))]:
        start = ticks
        await call()
        progress[name] = ticks - start
    for name, call in [("astream_complete", lambda: llm.astream_complete("hi")),
                       ("astream_chat", lambda: llm.astream_chat(messages))]:
        seen = [ticks async for _ in await call()]
        progress[name] = seen[-1] - seen[0]
    task.cancel()
    # A blocking implementation leaves the ticker at 0 during each call / between first and last piece.
    assert all(v >= 1 for v in progress.values()), progress


def test_markers_reach_the_model_as_kvs(llm, compressor, passage, monkeypatch):
    seen = []
    original = compressor.segments

    def spy(prompt):
        out = original(prompt)
        seen.append(out)
        return out

    monkeypatch.setattr(compressor, "segments", spy)
    llm.complete(f"A {passage.marker} B")
    [segs] = seen
    [kv] = [s for s in segs if isinstance(s, AnchorKV)]
    assert kv is compressor.store.get(passage.key)


def test_non_text_blocks_are_refused_not_dropped():
    import pytest
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
    from sac_rag.compressor import SACCompressor
    from sac_rag.testing import tiny_sac

    from llama_index.llms.sac import SAC

    llm = SAC(compressor=SACCompressor(tiny_sac()), max_tokens=2)
    msg = ChatMessage(role=MessageRole.USER, blocks=[TextBlock(text="what is this?"), ImageBlock(image=b"\x89PNG....")])
    with pytest.raises(ValueError, match="text only"):
        llm.chat([msg])


def test_grounded_complete_returns_a_span_of_the_passage(compressor, passage):
    llm = SAC(compressor=compressor, max_tokens=6, grounded=True)
    resp = llm.complete(f"Context: {passage.marker}\nQ: when?\nA:")
    text = compressor.text_of(passage.marker)
    span = resp.raw["span"]
    assert span["passage"] == 0 and resp.text == span["text"] == text[span["start"] : span["end"]]
    streamed = list(llm.stream_complete(f"Context: {passage.marker}\nQ: when?\nA:"))
    assert streamed[-1].text == resp.text and streamed[-1].raw["span"] == span
