"""Session 21: grounded beam search (width 4) against greedy grounded decoding, on end_bias.py's questions.
Usage: beam.py METHOD DATA PASSAGES OUT.json (float32, one thread)."""
import json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag.generation import _forward
from sac_rag.grounding import _output
from sac_rag.evaluation.metrics import score

from common import questions


def _beam_decode(ctx, state, index, params, top_k: int, width: int,
                 end_bias: float = 0.0) -> tuple[list[int], str]:
    """Grounded beam search: the span (and its end) with the highest summed log-probability that ``width``
    hypotheses find; ending costs the log-probability of the likeliest ending token (plus ``end_bias``).
    Greedy only; ``state`` is copied for each hypothesis and left as it was."""
    import copy

    decode = lambda ids: ctx.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    embed = ctx.model.get_input_embeddings()
    device = embed.weight.device
    beams: list[tuple[float, list[int], object]] = [(0.0, [], state)]
    done: list[tuple[float, list[int], str]] = []
    for step in range(params.max_new_tokens):
        cands: list[tuple[float, list[int], object, bool]] = []
        for score, ids, st in beams:
            logp = torch.log_softmax(st.logits.float(), dim=-1)
            cur = decode(ids)
            whole = bool(ids) and index.locate(cur) is not None
            ended = not whole
            n = 0
            for tok in torch.topk(logp, min(top_k, logp.shape[-1])).indices.tolist():
                if tok in ctx.eos_ids:
                    end, text = "eos", cur
                else:
                    text = decode(ids + [tok])
                    cuts = [c for c in (text.find(s) for s in params.stop) if c >= 0]
                    end, text = ("stop", text[: min(cuts)]) if cuts else (None, text)
                if end and len(text) <= len(cur):
                    if not ended:
                        done.append((score + float(logp[tok]) + end_bias, ids, end))
                        ended = True
                elif n < width and text.strip() and (index.locate(text) is not None if end else index.is_prefix(text)):
                    cands.append((score + float(logp[tok]), ids + [tok], st, end is not None))
                    n += 1
                if ended and n >= width:
                    break
        cands.sort(key=lambda c: -c[0])
        beams = []
        for score, ids, st, ends in cands[:width]:
            if ends:
                done.append((score, ids, "stop"))
            elif step == params.max_new_tokens - 1:
                done.append((score, ids, "length"))
            else:
                nxt = copy.deepcopy(st)
                _forward(ctx, nxt, embed(torch.tensor([[ids[-1]]], device=device)), [nxt.next_pos])
                nxt.next_pos += 1
                beams.append((score, ids, nxt))
        best_done = max((d[0] for d in done), default=float("-inf"))
        if not beams or best_done >= max(b[0] for b in beams):  # scores only fall as answers grow
            break
    if not done:
        return [], "constraint"
    score, ids, finish = max(done, key=lambda d: d[0])
    return ids, finish



WIDTHS = (4,)
method, data, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
records = []
t0 = time.time()
for n, e, passages, ctx, state, index, params in questions(sys.argv):
    rec = {"id": e.id, "answers": list(e.answers)}
    with torch.inference_mode():
        for w in WIDTHS:
            ids, finish = _beam_decode(ctx, state, index, params, 128, w)
            o = _output(ctx, state, index, params, ids, finish)
            rec[f"beam{w}"] = {"prediction": o.text.strip(), **score(o.text.strip(), e.answers)}
    records.append(rec)
    if n % 20 == 19:
        print(n + 1, f"{time.time() - t0:.0f}s", {f"beam{w}": round(100 * sum(r[f"beam{w}"]["f1"] for r in records) / len(records), 2) for w in WIDTHS}, flush=True)
summary = {f"beam{w}": {m: round(100 * sum(r[f"beam{w}"][m] for r in records) / len(records), 2) for m in ("em", "f1")} for w in WIDTHS}
print(summary)
json.dump({"method": method, "data": sys.argv[2], "passages": k, "summary": summary, "records": records}, open(out, "w"), indent=1, ensure_ascii=False)
