"""SACLLM: the completion face (prompt used as is), sync, streaming, batch and async."""

from __future__ import annotations

import asyncio
import time

from langchain_core.outputs import LLMResult
from pytest_socket import disable_socket, enable_socket

from langchain_sac import SACLLM


def test_invoke_uses_the_prompt_as_is(compressor, docs):
    [p] = compressor.compress([docs[0].page_content])
    llm = SACLLM(compressor=compressor, max_tokens=10)
    prompt = f"Context: {p.marker}\nQuestion: where?\nAnswer:"
    out = compressor.generate(prompt, max_new_tokens=10)
    assert llm.invoke(prompt) == out.text
    result = llm.generate([prompt])
    assert isinstance(result, LLMResult)
    info = result.generations[0][0].generation_info
    assert info["finish_reason"] == out.finish_reason
    assert info["usage"] == {"input_tokens": out.usage.prompt_tokens + out.usage.anchors,
                             "output_tokens": out.usage.generated_tokens,
                             "total_tokens": out.usage.prompt_tokens + out.usage.anchors + out.usage.generated_tokens}
    assert info["sac_usage"]["anchors"] == p.num_anchors
    assert result.llm_output["token_usage"] == info["usage"]


def test_stream_matches_invoke(compressor):
    llm = SACLLM(compressor=compressor, max_tokens=12)
    chunks = list(llm.stream("Once upon a time"))
    assert "".join(chunks) == llm.invoke("Once upon a time")


def test_stop(compressor):
    llm = SACLLM(compressor=compressor, max_tokens=24)
    full = llm.invoke("Once upon a time")
    stop = next(c for c in full[1:] if c.isprintable() and not c.isspace() and c != "\ufffd")
    cut = llm.invoke("Once upon a time", stop=[stop])
    assert stop not in cut and full.startswith(cut)
    assert "".join(llm.stream("Once upon a time", stop=[stop])) == cut


def test_batch_equals_serial(compressor, docs):
    passages = compressor.compress([d.page_content for d in docs])
    llm = SACLLM(compressor=compressor, max_tokens=8)
    prompts = [f"{passages[i % 3].marker} Q{i}:" for i in range(16)]
    serial = [llm.invoke(p) for p in prompts]
    assert llm.batch(prompts, config={"max_concurrency": 8}) == serial
    result = llm.generate(prompts[:3])
    assert [g[0].text for g in result.generations] == serial[:3]
    assert result.llm_output["token_usage"]["total_tokens"] == sum(
        g[0].generation_info["usage"]["total_tokens"] for g in result.generations)


def test_get_num_tokens_offline(compressor):
    llm = SACLLM(compressor=compressor)
    disable_socket()
    try:
        assert llm.get_num_tokens("hello there") == len(compressor.model.tokenize("hello there"))
    finally:
        enable_socket()


async def test_async(compressor, monkeypatch):
    llm = SACLLM(compressor=compressor, max_tokens=8)
    want = llm.invoke("Once")
    assert await llm.ainvoke("Once") == want
    assert "".join([c async for c in llm.astream("Once")]) == want
    assert await llm.abatch(["Once", "Once"]) == [want, want]

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
    seen = [ticks async for _ in llm.astream("Once")]
    start = ticks
    await llm.ainvoke("Once")
    task.cancel()
    assert seen[-1] > seen[0]
    assert ticks - start >= 1
