"""SACCompressor: the one object the integrations share between their compressor and their LLM.

It compresses passages (each on its own, skipping any already in the
store), stores their anchor KV under ``<model fingerprint>-<sha256(text)>``,
and hands back, per passage, a marker to put in the prompt text plus its
statistics. The LLM side calls :meth:`segments` on the final prompt: markers
become stored KVs, the rest stays text. A marker this compressor did not
issue, or a forged one, is never resolved: it raises
:class:`UnknownMarkerError`, or, with ``on_unknown="text"``, stays inert text.
A passage whose KV was evicted is recompressed from its text. This module
knows the store, markers and the model's public API; nothing about LangChain
or LlamaIndex.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import AsyncIterator, Iterator, Sequence

from .errors import CorruptKVError, InvalidInputError, KVMismatchError, UnknownMarkerError, check_text
from .generation import GenerationOutput, StreamPiece
from .kv import AnchorKV
from .markers import MarkerCodec, find_markers, neutralize, split_markers
from .store import KVStore, make_key

__all__ = ["SACCompressor", "CompressedPassage", "UnknownMarkerError"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompressedPassage:
    """What the compressor did with one passage."""

    marker: str
    key: str
    num_tokens: int
    num_anchors: int
    nbytes: int
    cached: bool  # True: found in the store, not compressed again

    @property
    def ratio(self) -> float:
        return self.num_tokens / max(1, self.num_anchors)

    def to_dict(self) -> dict:
        return {"marker": self.marker, "key": self.key, "num_tokens": self.num_tokens, "num_anchors": self.num_anchors,
                "nbytes": self.nbytes, "cached": self.cached}


class SACCompressor:
    """Compress passages into a shared :class:`KVStore` and resolve prompt markers back into KVs."""

    def __init__(
        self,
        model=None,
        store: KVStore | None = None,
        *,
        on_unknown: str = "raise",
        batch_size: int | None = None,
        max_refs: int = 100_000,
        secret: bytes | None = None,
    ) -> None:
        if on_unknown not in ("raise", "text"):
            raise InvalidInputError(f"on_unknown must be 'raise' or 'text', got {on_unknown!r}")
        if model is None:
            from .sac_model import SACModel

            model = SACModel.from_pretrained()
        self.model = model
        self.store = store if store is not None else KVStore()
        self.on_unknown = on_unknown
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
            raise InvalidInputError(f"batch_size must be None or an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self._codec = MarkerCodec(secret)
        self._refs: OrderedDict[str, tuple[str, str]] = OrderedDict()  # ref -> (store key, passage text)
        self._max_refs = max_refs
        self._lock = threading.RLock()

    # ---- compression -------------------------------------------------------------------------
    def _key(self, text: str) -> str:
        return make_key(self.model.fingerprint, hashlib.sha256(text.encode("utf-8")).hexdigest())

    def _register(self, key: str, text: str) -> str:
        marker = self._codec.marker(key)
        ref = marker[6:-2]
        with self._lock:
            self._refs[ref] = (key, text)
            self._refs.move_to_end(ref)
            while len(self._refs) > self._max_refs:
                self._refs.popitem(last=False)
        return marker

    @staticmethod
    def check_query(query: str | None) -> None:
        """Refuse a user's question that holds a marker (the integrations call this with the query they see),
        so nobody makes the model read a passage by pasting its marker into a question."""
        if isinstance(query, str) and find_markers(query):
            raise UnknownMarkerError("the question contains an SAC marker; markers may only come from the compressor")

    def compress(self, texts: Sequence[str], *, progress: bool = False) -> list[CompressedPassage]:
        """Compress passages not yet stored (batched), store them, and return a marker + stats for each."""
        if isinstance(texts, (str, bytes, bytearray)) or not isinstance(texts, Sequence):
            raise InvalidInputError(f"compress takes a list of strings, got {type(texts).__name__}")
        texts = [neutralize(t) if isinstance(t, str) else t for t in texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInputError(f"passage {i} is a {type(t).__name__}, expected str")
            check_text(t, f"passage {i}")  # before hashing it
        keys = [self._key(t) for t in texts]
        found: dict[str, AnchorKV] = {}
        todo: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key in found or key in todo:
                continue
            kv = self._stored(key)
            if kv is not None:
                found[key] = kv
            else:
                todo[key] = text
        fresh = {}
        if todo:
            kvs = self.model.compress_batch(list(todo.values()), batch_size=self.batch_size, progress=progress)
            for key, kv in zip(todo, kvs):
                self.store.put(key, kv, {"text": todo[key]})
                fresh[key] = kv
        out = []
        for key, text in zip(keys, texts):
            kv = found.get(key) or fresh[key]
            out.append(CompressedPassage(self._register(key, text), key, kv.num_tokens, kv.num_anchors, kv.nbytes,
                                         cached=key in found))
        return out

    def precompress(self, texts: Sequence[str], *, progress: bool = True) -> list[CompressedPassage]:
        """Compress a corpus at indexing time, with a progress bar; already-stored passages are skipped."""
        out: list[CompressedPassage] = []
        step = max(8, (self.batch_size or 1) * 8)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="precompressing", unit="passage")
        for i in range(0, len(texts), step):
            out.extend(self.compress(list(texts[i : i + step])))
            if bar is not None:
                bar.update(min(step, len(texts) - i))
        if bar is not None:
            bar.close()
        return out

    def _stored(self, key: str) -> AnchorKV | None:
        """The stored KV under ``key`` if it is sound for this model; None (so it is recompressed) if it is
        missing, damaged (the store drops those), or a well-formed file that is not what this model makes."""
        kv = self.store.get(key, expected_fingerprint=self.model.fingerprint)
        if kv is None:
            return None
        try:
            self.model.check_kv(kv, content_hash=key.split("-", 1)[1])
        except (CorruptKVError, KVMismatchError) as exc:
            logger.warning("sac-rag: stored KV %s is unusable (%s); recompressing it", key, exc)
            return None
        return kv

    # ---- resolution --------------------------------------------------------------------------
    def text_of(self, marker_or_ref: str) -> str | None:
        """The original passage text behind a marker this compressor issued (None if unknown)."""
        if not isinstance(marker_or_ref, str):
            raise InvalidInputError(f"text_of takes a marker string, got {type(marker_or_ref).__name__}")
        ref = marker_or_ref[6:-2] if marker_or_ref.startswith("[[sac:") else marker_or_ref
        with self._lock:
            entry = self._refs.get(ref)
        return entry[1] if entry else None

    def segments(self, prompt: str) -> list[str | AnchorKV]:
        """Split a prompt at markers: text stays text, each marker becomes its stored AnchorKV."""
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a str, got {type(prompt).__name__}")
        out: list[str | AnchorKV] = []
        for part in split_markers(prompt):
            if isinstance(part, str):
                out.append(part)
                continue
            ref = part[0]
            with self._lock:
                entry = self._refs.get(ref)
            if entry is None:
                if self.on_unknown == "raise":
                    raise UnknownMarkerError(
                        f"marker [[sac:{ref}]] was not issued by this compressor (forged, stale or from another "
                        "process); pass on_unknown='text' to keep such markers as plain text"
                    )
                out.append(f"[[sac-unknown:{ref}]]")
                continue
            key, text = entry
            kv = self._stored(key)
            if kv is None:  # evicted or damaged: recompress from the text we kept
                kv = self.model.compress(text)
                self.store.put(key, kv, {"text": text})
            out.append(kv)
        return out

    def passages_in(self, prompt: str) -> list[str]:
        """The texts behind the markers of ``prompt``, in order (what grounded decoding takes answers from)."""
        texts = []
        for part in split_markers(prompt):
            if not isinstance(part, str):
                text = self.text_of(part[0])
                if text is not None:
                    texts.append(text)
        return texts

    def _ground(self, prompt: str, grounded: bool) -> dict:
        if not grounded:
            return {}
        texts = self.passages_in(prompt)
        if not texts:
            raise InvalidInputError("grounded=True takes the answer from compressed passages; the prompt has no marker")
        return {"ground": texts}

    def generate(self, prompt: str, *, grounded: bool = False, **kwargs) -> GenerationOutput:
        """Decode from ``prompt`` with its markers resolved. ``grounded=True``: the answer is a span of the
        passages behind the markers (``output.span.passage`` counts them in prompt order)."""
        return self.model.generate(self.segments(prompt), **self._ground(prompt, grounded), **kwargs)

    def stream(self, prompt: str, *, grounded: bool = False, **kwargs) -> Iterator[StreamPiece]:
        return self.model.stream(self.segments(prompt), **self._ground(prompt, grounded), **kwargs)

    async def agenerate(self, prompt: str, **kwargs) -> GenerationOutput:
        """:meth:`generate` in a worker thread: the event loop keeps running."""
        return await asyncio.to_thread(self.generate, prompt, **kwargs)

    async def astream(self, prompt: str, **kwargs) -> AsyncIterator[StreamPiece]:
        """:meth:`stream` produced in a worker thread and consumed without blocking the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        stop = threading.Event()

        def work() -> None:
            try:
                for piece in self.stream(prompt, **kwargs):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, piece)
            except BaseException as exc:  # handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await worker
