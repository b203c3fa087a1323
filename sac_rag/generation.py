"""Decoding from an ordered list of text segments and AnchorKVs with the frozen base model.

Layout of a prompt (positions in brackets)::

    BOS[0]  text[1..a]  kv[a+1..a+n]  [LM][a+n]  text[a+n+1..]  ...  answer

Text is tokenized and run through the base model; an AnchorKV is re-rotated to
its place and its keys/values are appended to the cache as they are; after a
run of AnchorKVs the learned ``[LM]`` embedding sits at the position of the
last compressed token, as in the reference code (with ``lm_tokens`` > 1, the
further ``[LM]`` vectors take the positions after it). Anchors stay visible to
sliding-window layers at any distance (they are "pinned"), while plain text
keeps the base model's own window, so a prompt without KVs decodes exactly
as the base model does.

This module knows the decoder's forward pass, sampling and stop strings. It
takes a :class:`DecoderContext` (what it needs from ``SACModel``) and does
not know files, stores or the encoder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch

from .attention import MaskBuilder
from .config import SACConfig
from .errors import InputTooLargeError, InvalidInputError, KVMismatchError, check_text
from .kv import AnchorKV
from .models import run_decoder

if TYPE_CHECKING:
    from .grounding import Span

__all__ = ["Usage", "GenerationOutput", "StreamPiece", "SamplingParams", "DecoderContext", "generate", "stream"]

Segment = str | AnchorKV | list[int]


@dataclass(frozen=True)
class Usage:
    """Token accounting of one call."""

    prompt_tokens: int  # text tokens run through the model (BOS included)
    anchors: int  # anchor KV entries read from compressed passages
    context_tokens: int  # tokens those anchors stand for
    generated_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.anchors + self.generated_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "anchors": self.anchors,
            "context_tokens": self.context_tokens,
            "generated_tokens": self.generated_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class GenerationOutput:
    text: str
    token_ids: list[int]
    finish_reason: str  # "eos", "stop" (a stop string), "length"; grounded decoding adds "constraint"
    usage: Usage
    span: "Span | None" = None  # grounded decoding (sac_rag.grounding): where the answer lies in the passages


@dataclass(frozen=True)
class StreamPiece:
    """A piece of streamed text; the last piece has ``finish_reason`` and ``usage`` set."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    token_ids: tuple[int, ...] | None = None  # on the last piece: every generated token id (EOS excluded)
    span: "Span | None" = None  # on the last piece of grounded decoding: where the answer lies

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise InvalidInputError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise InvalidInputError(f"seed must be an int or None, got {self.seed!r}")
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        stop = tuple(stop or ())
        if not all(isinstance(s, str) and s for s in stop):
            raise InvalidInputError(f"stop must be non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", stop)


@dataclass
class DecoderContext:
    """What decoding needs from an SACModel (kept explicit so this module stays small)."""

    model: object
    tokenizer: object
    config: SACConfig
    masks: MaskBuilder
    lm_embedding: torch.Tensor | None
    fingerprint: str
    bos_id: int | None
    eos_ids: frozenset[int]
    decoder_mode: Callable[[], contextlib.AbstractContextManager]
    # The BOS sink's per-layer (key, value) at position 0, the same for every prompt: filled on first use and
    # reused when BOS would otherwise be a forward pass of its own (a prompt that opens with a KV segment).
    # None: no reuse, BOS runs through the model every time.
    bos_cache: dict | None = None


@dataclass
class _State:
    cache: object
    pos: torch.Tensor  # [K] positions of cache entries
    pinned: torch.Tensor  # [K] entries visible to sliding layers at any distance
    next_pos: int
    logits: torch.Tensor | None = None
    prompt_tokens: int = 0
    anchors: int = 0
    context_tokens: int = 0


def _tokenize(ctx: DecoderContext, text: str) -> list[int]:
    return list(ctx.tokenizer(text, add_special_tokens=False)["input_ids"])


def _forward(ctx: DecoderContext, state: _State, embeds: torch.Tensor, pos: list[int], keep: int = 1) -> None:
    """Run ``embeds`` [1, Q, H] at positions ``pos`` on top of the cache; keep the last ``keep`` positions' logits."""
    device = embeds.device
    q = embeds.shape[1]
    past = state.pos.shape[0]
    q_pos = torch.tensor(pos, dtype=torch.long, device=device)
    k_pos = torch.cat([state.pos, q_pos])
    pinned = torch.cat([state.pinned, torch.zeros(q, dtype=torch.bool, device=device)])
    allowed = torch.arange(past + q, device=device)[None, :] <= (past + torch.arange(q, device=device))[:, None]
    mask = ctx.masks.build(allowed[None], q_pos[None], k_pos[None], pinned[None], dtype=embeds.dtype)
    with ctx.decoder_mode():
        hidden = run_decoder(
            ctx.model, state.cache, inputs_embeds=embeds, position_ids=q_pos[None], attention_mask=mask
        ).last_hidden_state
        if keep:  # keep=0: a run in the middle of the prompt, whose logits nobody reads
            logits = _lm_head(ctx.model, hidden[0, -keep:])
            state.logits = logits[-1] if keep == 1 else logits
    state.pos, state.pinned = k_pos, pinned


def _lm_head(model, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits for ``hidden`` [n, H]. The rows are copied into a fresh [n, H] tensor first: a slice of
    the [1, Q, H] output keeps Q's strides, and CPU bf16 matmuls with those strides take a path ~50x slower."""
    head = model.get_output_embeddings()
    logits = head(hidden.reshape(-1, hidden.shape[-1]).clone(memory_format=torch.contiguous_format)).float()
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _append_kv(ctx: DecoderContext, state: _State, kv: AnchorKV, dtype: torch.dtype) -> None:
    device = state.pos.device
    keys, values = kv.keys.to(device=device, dtype=dtype), kv.values.to(device=device, dtype=dtype)
    for layer in range(kv.num_layers):
        state.cache.update(keys[layer][None], values[layer][None], layer)
    state.pos = torch.cat([state.pos, kv.positions.to(device)])
    state.pinned = torch.cat([state.pinned, torch.ones(kv.num_anchors, dtype=torch.bool, device=device)])


def _bos_kv(ctx: DecoderContext, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The BOS token's per-layer KV at position 0, computed once per device and dtype (the decoder is frozen)."""
    from transformers import DynamicCache

    # Tensors made under inference_mode must not enter an autograd graph (training), so each mode keeps its own.
    key = (str(device), dtype, torch.is_inference_mode_enabled())
    if key in ctx.bos_cache:
        return ctx.bos_cache[key]
    embed = ctx.model.get_input_embeddings()
    state = _State(cache=DynamicCache(), pos=torch.zeros(0, dtype=torch.long, device=device),
                   pinned=torch.zeros(0, dtype=torch.bool, device=device), next_pos=0)
    with torch.no_grad():
        _forward(ctx, state, embed(torch.tensor([[ctx.bos_id]], device=device)), [0], keep=0)
    layers = [(k.detach().clone(), v.detach().clone()) for k, v in _cache_layers(state.cache)]
    ctx.bos_cache[key] = layers
    return layers


def _cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


@dataclass
class _Layout:
    """A prompt laid out for the decoder, before any forward pass: in order, runs of text (token ids, None for the
    ``[LM]`` vector, with their positions) and AnchorKVs already placed at their positions."""

    pieces: list  # tuple[list[int | None], list[int]] (a text run) or AnchorKV
    text_tokens: int = 0
    anchors: int = 0
    context_tokens: int = 0
    last_pos: int = 0


def _layout(ctx: DecoderContext, segments: Sequence[Segment], vocab: int) -> _Layout:
    """Check the segments and lay them out (BOS at 0, ``[LM]`` after each run of KVs that text follows)."""
    if isinstance(segments, (str, AnchorKV)) or not isinstance(segments, Sequence) or len(segments) == 0:
        raise InvalidInputError("segments must be a non-empty list of str and AnchorKV items")
    out = _Layout(pieces=[])
    run_ids: list[int | None] = []
    run_pos: list[int] = []

    def close_run() -> None:
        if run_ids:
            out.pieces.append((list(run_ids), list(run_pos)))
            run_ids.clear()
            run_pos.clear()

    def add_lm(cur: int) -> int:
        """The ``[LM]`` vector(s) after a run of KVs: the first at the last compressed token's position (the
        reference code's place), any others at the positions after it; returns the last position in use."""
        for j in range(ctx.config.lm_tokens):
            run_ids.append(None)
            run_pos.append(cur + j)
        return cur + ctx.config.lm_tokens - 1

    if ctx.bos_id is not None:
        run_ids.append(ctx.bos_id)
        run_pos.append(0)
    cur = 0  # the last position in use
    after_kv = False
    text_chars = 0
    for i, seg in enumerate(segments):
        if isinstance(seg, AnchorKV):
            if seg.fingerprint != ctx.fingerprint:
                raise KVMismatchError(
                    f"segment {i} was compressed by model/adapter/config {seg.fingerprint}, this model is "
                    f"{ctx.fingerprint}: recompress the passage with this model"
                )
            if seg.num_layers != len(ctx.masks.layer_types):
                raise KVMismatchError(f"segment {i} has {seg.num_layers} layers, the model {len(ctx.masks.layer_types)}")
            close_run()
            out.pieces.append(seg.placed_at(cur))
            out.anchors += seg.num_anchors
            out.context_tokens += seg.num_tokens
            cur += seg.num_tokens
            after_kv = True
        elif isinstance(seg, str) or (isinstance(seg, (list, tuple)) and all(isinstance(t, int) for t in seg)):
            if isinstance(seg, str):
                check_text(seg, f"segment {i}")
                text_chars += len(seg)
                if text_chars > 16 * ctx.config.max_input_tokens:  # refuse before tokenizing megabytes
                    raise InputTooLargeError(f"prompt text has {text_chars} characters, over the limit")
            elif not all(0 <= t < vocab for t in seg):
                raise InvalidInputError(f"segment {i} holds token ids outside the vocabulary [0, {vocab})")
            ids = _tokenize(ctx, seg) if isinstance(seg, str) else list(seg)  # a list of ints is token ids
            if not ids:
                continue
            if ctx.bos_id is not None and ids[0] == ctx.bos_id and cur == 0 and len(run_ids) == 1:
                ids = ids[1:]  # a chat template's own BOS: we already put one at position 0
            out.text_tokens += len(ids)
            if out.text_tokens > ctx.config.max_input_tokens:
                raise InputTooLargeError(
                    f"prompt text has more than max_input_tokens={ctx.config.max_input_tokens} tokens"
                )
            if after_kv and ctx.config.lm_token:
                cur = add_lm(cur)
            after_kv = False
            run_ids.extend(ids)
            run_pos.extend(range(cur + 1, cur + 1 + len(ids)))
            cur += len(ids)
        else:
            raise InvalidInputError(f"segment {i} is a {type(seg).__name__}; expected str, AnchorKV or a list of token ids")
    if after_kv and ctx.config.lm_token:
        cur = add_lm(cur)
    if not run_ids:
        raise InvalidInputError("the prompt has nothing to decode from (add text after the last AnchorKV)")
    if out.text_tokens == 0 and out.anchors == 0:
        raise InvalidInputError("the prompt is empty: its segments hold no text and no AnchorKV")
    close_run()
    out.last_pos = cur
    return out


def _embed_run(ctx: DecoderContext, ids: list[int | None], device) -> torch.Tensor:
    """[len(ids), H] input embeddings; None stands for a learned ``[LM]`` vector (its gradient kept). With several
    ``[LM]`` vectors, each group of consecutive Nones takes them in order (the layout puts them in such groups)."""
    embed = ctx.model.get_input_embeddings()
    embeds = embed(torch.tensor([i if i is not None else 0 for i in ids], dtype=torch.long, device=device))
    if any(i is None for i in ids):
        lm = ctx.lm_embedding.to(device=device, dtype=embeds.dtype).reshape(-1, embeds.shape[-1])
        slot, j = [], 0
        for i in ids:
            slot.append(j % lm.shape[0] if i is None else 0)
            j = j + 1 if i is None else 0
        is_lm = torch.tensor([i is None for i in ids], device=device)
        picked = lm[torch.tensor(slot, dtype=torch.long, device=device)]
        embeds = torch.where(is_lm[:, None], picked, embeds)
    return embeds


def _prefill(ctx: DecoderContext, segments: Sequence[Segment], keep: int = 1) -> _State:
    """Feed the prompt; ``state.logits`` holds the last ``keep`` positions' logits (training reads several)."""
    from transformers import DynamicCache

    embed = ctx.model.get_input_embeddings()
    device, dtype = embed.weight.device, embed.weight.dtype
    layout = _layout(ctx, segments, embed.num_embeddings)
    state = _State(
        cache=DynamicCache(),
        pos=torch.zeros(0, dtype=torch.long, device=device),
        pinned=torch.zeros(0, dtype=torch.bool, device=device),
        next_pos=0,
    )
    pieces = layout.pieces
    for n, piece in enumerate(pieces):
        if isinstance(piece, AnchorKV):
            _append_kv(ctx, state, piece, dtype)
            continue
        ids, pos = piece
        if (ctx.bos_cache is not None and ctx.bos_id is not None and n == 0 and ids == [ctx.bos_id]
                and n + 1 < len(pieces)):  # BOS alone before a KV: its cached KV, no forward pass
            for layer, (k, v) in enumerate(_bos_kv(ctx, device, dtype)):
                state.cache.update(k, v, layer)
            state.pos = torch.zeros(1, dtype=torch.long, device=device)
            state.pinned = torch.zeros(1, dtype=torch.bool, device=device)
            continue
        _forward(ctx, state, _embed_run(ctx, ids, device)[None], pos, keep if n == len(pieces) - 1 else 0)
    state.anchors, state.context_tokens = layout.anchors, layout.context_tokens
    state.prompt_tokens = layout.text_tokens + (1 if ctx.bos_id is not None else 0)
    state.next_pos = layout.last_pos + 1
    return state


def _prefill_batch(ctx: DecoderContext, prompts: Sequence[Sequence[Segment]], keep: Sequence[int]) -> list[torch.Tensor]:
    """Teacher forcing for training: several prompts in one forward pass; returns, for prompt ``b``, the logits of
    its last ``keep[b]`` positions. Gives what :func:`_prefill` gives for each prompt alone (up to rounding).

    Each prompt's anchor KVs go into the cache first and all its text runs into one query block; the mask lets
    every token see exactly what it would have seen fed in order (anchors and text before it). Prompts whose KVs
    hold different numbers of anchors, or texts of different lengths, are padded; pad entries are seen by no one.
    """
    from transformers import DynamicCache

    embed = ctx.model.get_input_embeddings()
    device, dtype = embed.weight.device, embed.weight.dtype
    if not prompts or len(keep) != len(prompts):
        raise InvalidInputError(f"_prefill_batch needs one keep count per prompt, got {len(keep)} for {len(prompts)}")
    layouts = [_layout(ctx, p, embed.num_embeddings) for p in prompts]
    for b, (lay, k) in enumerate(zip(layouts, keep)):
        fed = sum(len(piece[0]) for piece in lay.pieces if not isinstance(piece, AnchorKV))
        if not 1 <= k <= fed:
            raise InvalidInputError(f"prompt {b}: keep must be in [1, {fed}] (its text tokens), got {k}")
    n_layers = len(ctx.masks.layer_types)
    rows = []  # per prompt: (kv pieces, kv order, text ids, text pos, text order)
    for lay in layouts:
        kvs, kv_order, ids, pos, t_order = [], [], [], [], []
        order = 0
        for piece in lay.pieces:
            if isinstance(piece, AnchorKV):
                kvs.append(piece)
                kv_order += [order] * piece.num_anchors  # anchors of one KV are seen together, after what came before
                order += 1
            else:
                for i, p in zip(*piece):
                    ids.append(i)
                    pos.append(p)
                    t_order.append(order)
                    order += 1
        rows.append((kvs, kv_order, ids, pos, t_order))
    n_kv = max(len(r[1]) for r in rows)
    n_q = max(len(r[2]) for r in rows)
    big = 1 << 30  # the order of pad keys: after every query
    k_order = torch.full((len(rows), n_kv + n_q), big, dtype=torch.long, device=device)
    k_pos = torch.zeros((len(rows), n_kv + n_q), dtype=torch.long, device=device)
    pinned = torch.zeros((len(rows), n_kv + n_q), dtype=torch.bool, device=device)
    q_order = torch.full((len(rows), n_q), -1, dtype=torch.long, device=device)
    q_pos = torch.zeros((len(rows), n_q), dtype=torch.long, device=device)
    embeds, key_rows, value_rows = [], [], []
    ref = next((r[0][0] for r in rows if r[0]), None)  # any KV: the shape of pad entries
    for b, (kvs, kv_order, ids, pos, t_order) in enumerate(rows):
        k = len(kv_order)
        if n_kv:
            if kvs:
                kk = torch.cat([kv.keys for kv in kvs], dim=2).to(device=device, dtype=dtype)
                vv = torch.cat([kv.values for kv in kvs], dim=2).to(device=device, dtype=dtype)
                kp = torch.cat([kv.positions for kv in kvs]).to(device)
            else:
                kk = vv = None
                kp = torch.zeros(0, dtype=torch.long, device=device)
            if k < n_kv:  # pad (zeros; masked out for every query)
                pad = torch.zeros((n_layers, ref.keys.shape[1], n_kv - k, ref.keys.shape[3]), dtype=dtype, device=device)
                kk = pad if kk is None else torch.cat([kk, pad], dim=2)
                vv = pad if vv is None else torch.cat([vv, pad], dim=2)
            key_rows.append(kk)
            value_rows.append(vv)
            k_order[b, :k] = torch.tensor(kv_order, dtype=torch.long)
            k_pos[b, :k] = kp
            pinned[b, :k] = True
        t = len(ids)
        e = _embed_run(ctx, ids, device)
        if t < n_q:
            e = torch.cat([e, e.new_zeros(n_q - t, e.shape[1])])
        embeds.append(e)
        q_order[b, :t] = torch.tensor(t_order, dtype=torch.long)
        q_pos[b, :t] = torch.tensor(pos, dtype=torch.long)
        q_pos[b, t:] = pos[-1] if pos else 0
        k_order[b, n_kv : n_kv + t] = q_order[b, :t]
        k_pos[b, n_kv:] = q_pos[b]
    # text sees anchors and text laid out before it, and itself; a pad query sees only itself (no empty rows)
    allowed = k_order[:, None, :] <= q_order[:, :, None]  # orders are unique: a KV's is never a text token's
    eye = torch.zeros((len(rows), n_q, n_kv + n_q), dtype=torch.bool, device=device)
    eye[:, torch.arange(n_q), n_kv + torch.arange(n_q)] = True
    allowed |= eye & (q_order < 0)[:, :, None]
    mask = ctx.masks.build(allowed, q_pos, k_pos, pinned, dtype=dtype)
    cache = DynamicCache()
    if n_kv:
        kk, vv = torch.stack(key_rows), torch.stack(value_rows)  # [B, L, H, K, D]
        for layer in range(n_layers):
            cache.update(kk[:, layer], vv[:, layer], layer)
    with ctx.decoder_mode():
        hidden = run_decoder(
            ctx.model, cache, inputs_embeds=torch.stack(embeds), position_ids=q_pos, attention_mask=mask
        ).last_hidden_state
        lengths = [len(r[2]) for r in rows]
        picked = torch.cat([hidden[b, lengths[b] - keep[b] : lengths[b]] for b in range(len(rows))])
        logits = _lm_head(ctx.model, picked)
    return list(torch.split(logits, list(keep)))


def _pick(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < params.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


def _tokens(ctx: DecoderContext, state: _State, params: SamplingParams) -> Iterator[int]:
    """Yield generated token ids until EOS or the token limit (EOS is yielded last, then the loop ends)."""
    gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    embed = ctx.model.get_input_embeddings()
    device = embed.weight.device
    for step in range(params.max_new_tokens):
        token = _pick(state.logits, params, gen)
        yield token
        if token in ctx.eos_ids or step == params.max_new_tokens - 1:
            return
        embeds = embed(torch.tensor([[token]], device=device))
        _forward(ctx, state, embeds, [state.next_pos])
        state.next_pos += 1


def stream(ctx: DecoderContext, segments: Sequence[Segment], params: SamplingParams) -> Iterator[StreamPiece]:
    """Stream text pieces; stop strings are never emitted, even split across tokens."""
    with torch.inference_mode():
        state = _prefill(ctx, segments)
        ids: list[int] = []
        emitted = 0
        finish = "length"
        hold = max((len(s) for s in params.stop), default=1) - 1
        for token in _tokens(ctx, state, params):
            if token in ctx.eos_ids:
                finish = "eos"
                break
            ids.append(token)
            text = ctx.tokenizer.decode(ids, skip_special_tokens=True)
            hits = [text.find(s, max(0, emitted - hold)) for s in params.stop]
            hits = [h for h in hits if h >= 0]
            if hits:
                cut = min(hits)
                if cut > emitted:
                    yield StreamPiece(text[emitted:cut])
                emitted = cut
                finish = "stop"
                break
            safe = len(text) - hold
            while safe > emitted and text[safe - 1] == "\ufffd":  # an incomplete multi-byte character
                safe -= 1
            if safe > emitted:
                yield StreamPiece(text[emitted:safe])
                emitted = safe
        if finish != "stop":
            text = ctx.tokenizer.decode(ids, skip_special_tokens=True)
            if len(text) > emitted:
                yield StreamPiece(text[emitted:])
        usage = Usage(state.prompt_tokens, state.anchors, state.context_tokens, len(ids))
        yield StreamPiece("", finish_reason=finish, usage=usage, token_ids=tuple(ids))


def generate(ctx: DecoderContext, segments: Sequence[Segment], params: SamplingParams) -> GenerationOutput:
    pieces = list(stream(ctx, segments, params))
    last = pieces[-1]
    return GenerationOutput(
        text="".join(p.text for p in pieces),
        token_ids=list(last.token_ids),
        finish_reason=last.finish_reason,
        usage=last.usage,
    )
