"""Load: 8 concurrent workers x 50 requests through the LangChain chat model (thread pool) and the LlamaIndex LLM
(asyncio), with a KVStore budget of about three passages, so KVs are evicted and recompressed all the time. The
answers equal serial greedy runs of the same prompts and the store never holds more bytes than its budget."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sac_rag import KVStore, SACCompressor

PASSAGES = [
    f"Fact {i}: the {c} city of {n} has {i * 7 + 3} bridges, {i % 4 + 1} rivers and a museum of {m}."
    for i, (c, n, m) in enumerate([
        ("old", "Avalon", "clocks"), ("small", "Brigadoon", "maps"), ("busy", "Camelot", "glass"),
        ("cold", "Dunwich", "salt"), ("green", "Eldorado", "kites"), ("quiet", "Fairhaven", "bells"),
        ("windy", "Gondor", "coins"), ("bright", "Hobbiton", "boats"), ("high", "Ithaca", "paper"),
        ("low", "Jericho", "stone"),
    ])
]
QUESTIONS = ["How many bridges?", "Which museum?", "How many rivers?", "Name the city.", "What is it known for?"]
WORKERS, PER_WORKER = 8, 50
N = WORKERS * PER_WORKER
MAX_TOKENS = 4


def _request(i: int) -> tuple[int, int, int]:
    return i % len(PASSAGES), (i * 3 + 1) % len(PASSAGES), i % len(QUESTIONS)


class BudgetWatch:
    """Samples ``store.stats()`` in a thread while the load runs."""

    def __init__(self, store: KVStore) -> None:
        self.store, self.samples, self.max_bytes, self.max_entries = store, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = self.store.stats()  # checked by the test: an assert in this thread would go unseen
            self.max_bytes, self.max_entries = max(self.max_bytes, s.bytes), max(self.max_entries, s.entries)
            self.samples += 1
            time.sleep(0.0005)

    def __enter__(self) -> "BudgetWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def small_store(rsac):
    one = rsac.compress(PASSAGES[0]).nbytes
    return KVStore(max_bytes=3 * one)  # about three passages: constant eviction and recompression


def _compress_each(comp: SACCompressor) -> list[str]:
    # One at a time, as a recompression after eviction does: so a recomputed KV is bit-identical to the first.
    return [comp.compress([p])[0].marker for p in PASSAGES]


def test_chat_sac_batch_8_threads_x_50_equals_serial(rsac, small_store, report):
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_sac import ChatSAC

    comp = SACCompressor(rsac, small_store)
    markers = _compress_each(comp)
    chat = ChatSAC(compressor=comp, max_tokens=MAX_TOKENS)

    def messages(i: int):
        a, b, q = _request(i)
        return [SystemMessage(content=f"Answer from:\n{markers[a]}\n{markers[b]}"), HumanMessage(content=QUESTIONS[q])]

    serial = {}
    for i in range(N):
        if _request(i) not in serial:
            serial[_request(i)] = chat.invoke(messages(i)).content
    evictions_before = small_store.stats().evictions
    started = time.monotonic()
    with BudgetWatch(small_store) as watch:
        out = chat.batch([messages(i) for i in range(N)], config={"max_concurrency": WORKERS})
    elapsed = time.monotonic() - started
    answers = [m.content for m in out]
    assert answers == [serial[_request(i)] for i in range(N)]
    assert all(m.usage_metadata["output_tokens"] >= 1 for m in out)
    stats = small_store.stats()
    assert stats.bytes <= stats.max_bytes and watch.max_bytes <= stats.max_bytes and watch.samples > 0
    assert stats.evictions > evictions_before, "the budget forced evictions (and recompression) under load"
    assert len(comp._refs) == len(PASSAGES), "the marker table holds one ref per passage, not per request"

    case = f"ChatSAC.batch: {N} requests, max_concurrency={WORKERS}, greedy, {MAX_TOKENS} tokens"
    report.record("concurrency", case, "equal to serial", N)
    report.note("concurrency", case, f"{len(serial)} distinct prompts run serially first; {elapsed:.1f} s; store budget "
                f"{stats.max_bytes} B, peak {watch.max_bytes} B over {watch.samples} samples; "
                f"{stats.evictions - evictions_before} evictions")


async def test_llama_index_acomplete_8x50_gathered_equals_serial(rsac, small_store, report):
    from llama_index.core import Settings
    from llama_index.llms.sac import SAC

    comp = SACCompressor(rsac, small_store)
    markers = _compress_each(comp)
    saved = Settings._tokenizer
    llm = SAC(compressor=comp, max_tokens=MAX_TOKENS)
    Settings._tokenizer = saved

    def prompt(i: int) -> str:
        a, b, q = _request(i)
        return f"Context information:\n{markers[a]}\n{markers[b]}\nQuery: {QUESTIONS[q]}\nAnswer:"

    serial = {}
    for i in range(N):
        if _request(i) not in serial:
            serial[_request(i)] = llm.complete(prompt(i)).text
    # acomplete runs each request in the loop's default executor: give it 8 worker threads.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(WORKERS, thread_name_prefix="sac-load"))
    evictions_before = small_store.stats().evictions
    started = time.monotonic()
    with BudgetWatch(small_store) as watch:
        # 8 client tasks, each sending its 50 requests at once: all 400 are in flight together.
        async def client(w: int):
            return await asyncio.gather(*(llm.acomplete(prompt(w * PER_WORKER + j)) for j in range(PER_WORKER)))

        per_client = await asyncio.gather(*(client(w) for w in range(WORKERS)))
    elapsed = time.monotonic() - started
    answers = [r.text for rs in per_client for r in rs]
    assert answers == [serial[_request(i)] for i in range(N)]
    stats = small_store.stats()
    assert stats.bytes <= stats.max_bytes and watch.max_bytes <= stats.max_bytes and watch.samples > 0
    assert stats.evictions > evictions_before

    case = f"LlamaIndex SAC.acomplete: asyncio.gather of {WORKERS} x {PER_WORKER} requests, greedy, {MAX_TOKENS} tokens"
    report.record("concurrency", case, "equal to serial", N)
    report.note("concurrency", case, f"{len(serial)} distinct prompts run serially first; {elapsed:.1f} s; store budget "
                f"{stats.max_bytes} B, peak {watch.max_bytes} B over {watch.samples} samples; "
                f"{stats.evictions - evictions_before} evictions")


def test_errors_under_load_stay_typed_and_do_not_disturb_other_requests(rsac, small_store, report):
    """Good and bad requests mixed in one batch: each bad one gets its SACError, the good ones their serial answer."""
    from langchain_core.messages import HumanMessage
    from langchain_sac import ChatSAC

    from sac_rag import SACError

    comp = SACCompressor(rsac, small_store)
    markers = _compress_each(comp)
    chat = ChatSAC(compressor=comp, max_tokens=MAX_TOKENS)
    bad_inputs = ["[[sac:" + "0" * 24 + "]] forged", "bad \ud800 text", "x" * 10_000]
    good = [f"{markers[i % len(markers)]} {QUESTIONS[i % len(QUESTIONS)]}" for i in range(len(markers))]
    serial = {g: chat.invoke([HumanMessage(content=g)]).content for g in good}
    inputs = [good[i % len(good)] if i % 4 else bad_inputs[(i // 4) % len(bad_inputs)] for i in range(120)]
    out = chat.batch([[HumanMessage(content=x)] for x in inputs], config={"max_concurrency": WORKERS}, return_exceptions=True)
    for x, r in zip(inputs, out):
        if x in serial:
            assert r.content == serial[x]
            report.record("concurrency", "ChatSAC.batch, good and bad requests mixed (120, 8 threads)", "good: equal to serial")
        else:
            assert isinstance(r, SACError), r
            report.record("concurrency", "ChatSAC.batch, good and bad requests mixed (120, 8 threads)",
                          f"bad: {type(r).__name__}")
    assert small_store.stats().bytes <= small_store.max_bytes


def test_service_objects_can_be_logged(rsac, report):
    """repr() of every object a service holds works (LlamaIndex's SAC used to recurse forever)."""
    from langchain_sac import ChatSAC, SACDocumentCompressor, SACLLM
    from llama_index.core import Settings
    from llama_index.llms.sac import SAC
    from llama_index.postprocessor.sac import SACPostprocessor

    comp = SACCompressor(rsac)
    saved = Settings._tokenizer
    objects = [rsac, comp, comp.store, ChatSAC(compressor=comp), SACLLM(compressor=comp),
               SACDocumentCompressor(compressor=comp), SAC(compressor=comp), SACPostprocessor(compressor=comp)]
    Settings._tokenizer = saved
    for obj in objects:
        assert repr(obj) and str(obj)
    report.record("concurrency", "repr()/str() of service objects (for logs)", "ok", len(objects))
