"""Span-grounded decoding: the answer is a span of the retrieved passages' own text.

Extractive QA over retrieved passages wants an answer that can be pointed at: a span of one passage, with its
offsets. Free decoding from anchor KVs often gets the right place but garbles the surface form (a name spelled
wrong, a digit off; see docs/adapters.md, "Where the answers go wrong"). Grounded decoding lets the model decide
where the answer ends and the passages decide its words: it keeps the model's own ranking of next tokens but only
takes a token that keeps the answer a span of some passage, starting at a word start, and ends only at a word end.
The text is used for that string check alone: the decoder still reads only its segments (anchor KVs for SAC), so
the ratio the method reached does not change. ``end_bias`` makes ending dearer or cheaper when the model makes its
own choice. Two-stage grounding (:func:`generate_grounded_picked`) picks one of several passages reading all of
them, then answers from it read alone; it reads the picked passage twice, and was measured, not made a default
(docs/adapters.md, "Decoding variants").

Matching ignores case and collapses runs of whitespace; the returned text is the passage's own span. This module
knows strings and the decoder's step; it does not know files, stores or the encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import InvalidInputError, check_text
from .generation import DecoderContext, GenerationOutput, SamplingParams, Segment, Usage, _forward, _pick, _prefill

__all__ = ["Span", "SpanIndex", "generate_grounded", "generate_grounded_picked", "tokens_by_passage"]

@dataclass(frozen=True)
class Span:
    """Where a grounded answer lies: ``passages[passage][start:end] == text``."""

    passage: int
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        return {"passage": self.passage, "start": self.start, "end": self.end, "text": self.text}


def _fold(text: str) -> tuple[str, list[int]]:
    """Lower-cased text with whitespace runs made one space, and each folded character's offset in ``text``."""
    out: list[str] = []
    where: list[int] = []
    prev_space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            if prev_space:
                continue
            out.append(" ")
            where.append(i)
            prev_space = True
            continue
        low = ch.lower()
        out.append(low if len(low) == 1 else ch)  # keep offsets one to one ('İ'.lower() has two characters)
        where.append(i)
        prev_space = False
    return "".join(out), where


def _inside_word(text: str, i: int) -> bool:
    """True if a cut before ``text[i]`` would split a run of letters or digits."""
    return 0 < i < len(text) and text[i - 1].isalnum() and text[i].isalnum()


class SpanIndex:
    """The passages an answer must come from; answers text against them (case and whitespace folded)."""

    def __init__(self, passages: Sequence[str]) -> None:
        if isinstance(passages, str) or not isinstance(passages, Sequence) or not passages:
            raise InvalidInputError("grounding needs a non-empty list of passage texts")
        for i, p in enumerate(passages):
            if not isinstance(p, str):
                raise InvalidInputError(f"passage {i} is a {type(p).__name__}, not a str")
            check_text(p, f"passage {i}")
        if not any(p.strip() for p in passages):
            raise InvalidInputError("grounding needs passage text to take the answer from; every passage is blank")
        self.passages = list(passages)
        self._folded = [_fold(p) for p in self.passages]
        self.only: set[int] | None = None  # if set, spans come from these passages alone

    @staticmethod
    def _key(answer: str) -> str:
        return _fold(answer.lstrip())[0]

    def _starts(self, key: str, first: bool = False) -> list[tuple[int, int]]:
        """(passage, folded start) of every place ``key`` occurs starting at a word start (``first``: the first
        place only, the question asked for each candidate token)."""
        hits = []
        for p, (folded, _) in enumerate(self._folded):
            if self.only is not None and p not in self.only:
                continue
            at = folded.find(key)
            while at >= 0:
                if not _inside_word(folded, at):
                    hits.append((p, at))
                    if first:
                        return hits
                at = folded.find(key, at + 1)
        return hits

    def passages_starting(self, answer: str) -> set[int]:
        """The passages in which ``answer`` is the start of a span."""
        key = self._key(answer)
        return {p for p, _ in self._starts(key)} if key else set()

    def is_prefix(self, answer: str) -> bool:
        """Can ``answer`` still grow into a span (it is the start of one at a word start)? Empty: yes."""
        key = self._key(answer)
        return not key or bool(self._starts(key, first=True))

    def locate(self, answer: str) -> Span | None:
        """The first span that ``answer`` is, start and end at word boundaries; None if there is none."""
        key = self._key(answer).rstrip()
        if not key:
            return None
        for p, at in self._starts(key):
            end = at + len(key)
            if not _inside_word(self._folded[p][0], end):
                return self._span(p, at, end)
        return None

    def complete(self, answer: str) -> Span | None:
        """``answer`` as a whole span: itself if it ends at a word end, else carried on to the end of the word it
        stops inside (the first place it occurs); None if it is not the start of any span."""
        found = self.locate(answer)
        if found is not None:
            return found
        key = self._key(answer).rstrip()
        starts = self._starts(key, first=True) if key else []
        if not starts:
            return None
        p, at = starts[0]
        folded, _ = self._folded[p]
        end = at + len(key)
        while _inside_word(folded, end):
            end += 1
        return self._span(p, at, end)

    def _span(self, p: int, start: int, end: int) -> Span:
        where = self._folded[p][1]
        text = self.passages[p]
        o_start, o_end = where[start], where[end - 1] + 1  # keys never start or end with a space
        return Span(p, o_start, o_end, text[o_start:o_end])


def generate_grounded(ctx: DecoderContext, segments: Sequence[Segment], passages: Sequence[str],
                      params: SamplingParams, *, top_k: int = 128, end_bias: float = 0.0) -> GenerationOutput:
    """Decode an answer that is a span of ``passages``; ``output.span`` says where.

    The model decides when the answer ends, the passages decide its words. At each step the model's own choice
    comes first (greedy: its most likely token; sampling: a sample): if that is EOS or a stop string and the answer
    is a whole span, the answer ends there. Otherwise it goes on with the most likely of the ``top_k`` tokens
    (sampling: a sample among them) that keeps it the start of a span, or that makes it a whole span followed by a
    stop string. If none fits, or the token limit is reached inside a word, the answer is carried on to the end of
    that word in the passage. An answer that never starts (nothing in the first step's top ``top_k`` occurs in the
    passages) is empty, with ``span`` None.

    ``end_bias`` is added to the logits of the ``top_k`` tokens that would end the answer (EOS, a stop string)
    when the model's own choice is made: below 0 the answer goes on unless ending wins by that margin (longer
    answers), above 0 it ends sooner; 0 is the model as it is."""
    index = SpanIndex(passages)
    _check_decoding(top_k, end_bias)
    with torch.inference_mode():
        state = _prefill(ctx, segments)
        ids, finish = _decode(ctx, state, index, params, top_k, end_bias)
    return _output(ctx, state, index, params, ids, finish)


def _check_decoding(top_k: int, end_bias: float) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InvalidInputError(f"top_k must be an int >= 1, got {top_k!r}")
    if isinstance(end_bias, bool) or not isinstance(end_bias, (int, float)) or not math.isfinite(end_bias):
        raise InvalidInputError(f"end_bias must be a finite number, got {end_bias!r}")


def _output(ctx: DecoderContext, state, index: SpanIndex, params: SamplingParams, ids: list[int],
            finish: str) -> GenerationOutput:
    text = ctx.tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [c for c in (text.find(s) for s in params.stop) if c >= 0]
    span = index.complete(text[: min(cuts)] if cuts else text) if ids else None
    usage = Usage(state.prompt_tokens, state.anchors, state.context_tokens, len(ids))
    return GenerationOutput(text=span.text if span else "", token_ids=ids, finish_reason=finish, usage=usage, span=span)


def _decode(ctx: DecoderContext, state, index: SpanIndex, params: SamplingParams, top_k: int,
            end_bias: float, logps: list[float] | None = None) -> tuple[list[int], str]:
    """The grounded decoding loop on a prefilled ``state`` (advanced in place): the answer's token ids and why
    it ended. ``logps``, if given, receives each taken token's log-probability under the model, and the
    ending token's when the model chose to end."""
    decode = lambda ids: ctx.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    embed = ctx.model.get_input_embeddings()
    device = embed.weight.device
    ids: list[int] = []
    finish = "length"
    for step in range(params.max_new_tokens):
        logits = state.logits
        cur = decode(ids)

        seen: dict[int, tuple[str | None, str]] = {}

        def after(tok: int) -> tuple[str | None, str]:
            """How ``tok`` would end the answer ("eos", "stop" or None), and the answer's text with it (decoded
            once a step: the end_bias pass and the search for a fitting token ask about the same tokens)."""
            if tok not in seen:
                if tok in ctx.eos_ids:
                    seen[tok] = ("eos", cur)
                else:
                    text = decode(ids + [tok])
                    cuts = [c for c in (text.find(s) for s in params.stop) if c >= 0]
                    seen[tok] = ("stop", text[: min(cuts)]) if cuts else (None, text)
            return seen[tok]

        ranked = torch.topk(logits, min(top_k, logits.shape[-1])).indices.tolist()
        own_logits = logits
        if end_bias:  # the model's own choice, with ending made dearer (or cheaper) by end_bias
            ending = []
            for t in ranked:
                end, text = after(t)
                if end and len(text) <= len(cur):  # ends here without adding a word
                    ending.append(t)
            if ending:
                own_logits = logits.clone()
                own_logits[torch.tensor(ending, device=logits.device)] += end_bias
        own = _pick(own_logits, params, gen)
        end, text = after(own)  # the model's own choice: does the answer end here?
        if end and len(text) <= len(cur) and index.locate(cur) is not None:
            finish = end
            if logps is not None:
                logps.append(float(torch.log_softmax(logits.float(), -1)[own]))
            break
        fits: list[tuple[int, bool]] = []  # (token, whether the answer ends with it)
        for tok in ranked:
            end, text = after(tok)
            if (end and len(text) <= len(cur)) or not text.strip():
                continue  # ends without adding a word (the model did not choose to end), or adds only blanks
            if index.locate(text) is not None if end else index.is_prefix(text):
                fits.append((tok, end is not None))
                if params.temperature == 0:
                    break
        if not fits:
            finish = "constraint"
            break
        if params.temperature == 0:
            tok, ends = fits[0]
        else:
            allowed = torch.tensor([t for t, _ in fits], device=logits.device)
            masked = torch.full_like(logits, float("-inf"))
            masked[allowed] = logits[allowed]
            tok = _pick(masked, params, gen)
            ends = dict(fits)[tok]
        ids.append(tok)
        if logps is not None:
            logps.append(float(torch.log_softmax(logits.float(), -1)[tok]))
        if ends:
            finish = "stop"
            break
        if step == params.max_new_tokens - 1:
            break
        _forward(ctx, state, embed(torch.tensor([[tok]], device=device)), [state.next_pos])
        state.next_pos += 1
    return ids, finish


def tokens_by_passage(tokenizer, tokens: Sequence[int], index: SpanIndex, skip=()) -> list[list[int]]:
    """For each passage, those of ``tokens`` (in their order) whose text starts a span in it; a token that starts
    spans in several passages is listed for each; tokens in ``skip`` and blank ones for none. The string check
    behind a first answer token's passage masses (here and in training's passage-choice term)."""
    owned: list[list[int]] = [[] for _ in index.passages]
    for tok in tokens:
        if tok in skip:
            continue
        text = tokenizer.decode([tok], skip_special_tokens=True)
        if not text.strip():
            continue
        for p in index.passages_starting(text):
            owned[p].append(tok)
    return owned


def _passage_masses(ctx: DecoderContext, state, index: SpanIndex, top_k: int) -> list[float]:
    """Each passage's probability among the first step's ``top_k`` tokens that start a span in it (a token that
    starts spans in several passages counts for each)."""
    probs = torch.softmax(state.logits.float(), dim=-1)
    top = torch.topk(probs, min(top_k, probs.shape[-1]))
    prob = dict(zip(top.indices.tolist(), top.values.tolist()))
    owned = tokens_by_passage(ctx.tokenizer, list(prob), index, ctx.eos_ids)
    return [sum((prob[t] for t in toks), 0.0) for toks in owned]


def _passage_by_mass(ctx: DecoderContext, state, index: SpanIndex, top_k: int) -> int:
    """The passage whose span starts get the most probability among the first step's ``top_k`` tokens."""
    mass = _passage_masses(ctx, state, index, top_k)
    return max(range(len(mass)), key=lambda i: mass[i])


def generate_grounded_picked(ctx: DecoderContext, segments: Sequence[Segment], passages: Sequence[str],
                             alone: Sequence[Sequence[Segment]], params: SamplingParams, *, top_k: int = 128,
                             end_bias: float = 0.0) -> GenerationOutput:
    """Two-stage grounded decoding over several passages: pick one, then answer from it read alone.

    ``segments`` read all ``passages`` together; ``alone[i]`` reads passage ``i`` by itself (for SAC: its anchor KV
    and the question). The decoder reads ``segments`` once, and the passage whose span starts get the most
    probability among its first step's ``top_k`` tokens is picked; the answer is then decoded from ``alone[pick]``,
    grounded in that passage (``output.span.passage`` is its index in ``passages``). The decoder reads the picked
    passage twice, and ``output.usage`` counts both reads; ``context_tokens`` counts each passage once."""
    return _generate_picked(ctx, segments, passages, alone, params, top_k, end_bias)[0]


def _generate_picked(ctx, segments, passages, alone, params, top_k, end_bias) -> tuple[GenerationOutput, int]:
    index = SpanIndex(passages)
    _check_decoding(top_k, end_bias)
    if isinstance(alone, (str, bytes)) or not isinstance(alone, Sequence) or len(alone) != len(index.passages):
        raise InvalidInputError(f"alone must hold one prompt per passage ({len(index.passages)})")
    with torch.inference_mode():
        joint = _prefill(ctx, segments)
        pick = _passage_by_mass(ctx, joint, index, top_k)
        index.only = {pick}
        state = _prefill(ctx, alone[pick])
        ids, finish = _decode(ctx, state, index, params, top_k, end_bias)
    out = _output(ctx, state, index, params, ids, finish)
    usage = Usage(joint.prompt_tokens + state.prompt_tokens, joint.anchors + state.anchors, joint.context_tokens, len(ids))
    return GenerationOutput(out.text, out.token_ids, out.finish_reason, usage, out.span), pick
