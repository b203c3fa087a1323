"""Session 21: answer from each passage alone, then pick one answer (map-rerank). From questions 1-? of the NQ-open
run on, each record also has "mass": each passage's share of the first-token probability of span starts when
the decoder reads all passages together (grounding.py's _passage_masses). For each question among 4
distractors, every passage is read alone (SAC: its own anchor KV, compressed once; full-ft: its text) and a
grounded answer is decoded from it; each answer's token log-probabilities are kept, so selection rules can be
compared afterwards (rerank_score.py). Usage: rerank.py METHOD DATA OUT.json (float32, one thread)."""
import json, sys, time, warnings
import torch
warnings.simplefilter("ignore")
from sac_rag import SACModel
from sac_rag.generation import SamplingParams, _prefill
from sac_rag.grounding import SpanIndex, _decode, _output, _passage_masses
from sac_rag.evaluation.qa import EvalConfig, QA_TEMPLATE, select_examples, _segments
from sac_rag.evaluation.metrics import score

method, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
limit = int(sys.argv[4]) if len(sys.argv) > 4 else 200
torch.set_num_threads(1)
S = "/work/shared/data"
FT = "/root/.cache/sac-rag/runs/full-ft-qa/latest/adapter"
if data == "sq":
    cfg = EvalConfig(data=f"{S}/squad/squad-v1.1-dev-part2.json", passages=5, offset=3100, limit=limit)
else:
    cfg = EvalConfig(data=f"{S}/nq_open/nq-open-oracle.jsonl.gz", fmt="nq", parity="odd", passages=5, offset=700, limit=limit)
sac = SACModel.from_pretrained(adapter=FT if method == "full-ft" else "auto", ratio=5, dtype="float32", device="cpu")
params = SamplingParams(24, stop=("\n",))
records = []
t0 = time.time()
for n, (e, passages) in enumerate(select_examples(cfg)):
    ctx = sac._context()
    if method == "full-ft":
        ctx.decoder_mode = sac.encoder_mode
    q = QA_TEMPLATE.format(question=e.question.strip())
    kvs = sac.compress_batch(passages) if method == "sac" else None
    rec = {"id": e.id, "answers": list(e.answers), "gold": passages.index(e.passages[0]), "per_passage": []}
    # the decoder reading all passages: each passage's share of the first step's probability of span starts
    joint = [*kvs, q] if method == "sac" else _segments(sac, "full", e.question, passages, [], 5)[0]
    with torch.inference_mode():
        jstate = _prefill(ctx, joint)
        rec["mass"] = [round(m, 5) for m in _passage_masses(ctx, jstate, SpanIndex(passages), 128)]
    for i, p in enumerate(passages):
        segs = [kvs[i], q] if method == "sac" else _segments(sac, "full", e.question, [p], [], 5)[0]
        index = SpanIndex([p])
        logps: list[float] = []
        with torch.inference_mode():
            state = _prefill(ctx, segs)
            ids, finish = _decode(ctx, state, index, params, 128, 0.0, logps)
            o = _output(ctx, state, index, params, ids, finish)
        pred = o.text.strip()
        rec["per_passage"].append({"prediction": pred, "finish": finish, "logps": [round(x, 4) for x in logps],
                                   "n_tokens": len(ids), **score(pred, e.answers)})
    records.append(rec)
    if n % 20 == 19:
        best = lambda r: max(r["per_passage"], key=lambda a: sum(a["logps"]) / max(1, len(a["logps"])))["f1"]  # noqa: E731
        print(n + 1, f"{time.time() - t0:.0f}s", "mean-logp pick", round(100 * sum(best(r) for r in records) / len(records), 2),
              "gold alone", round(100 * sum(r["per_passage"][r["gold"]]["f1"] for r in records) / len(records), 2), flush=True)
json.dump({"method": method, "data": cfg.data, "passages": 5, "records": records}, open(out, "w"), indent=1, ensure_ascii=False)
