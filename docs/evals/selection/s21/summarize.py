"""Paired F1 gains of session 21's decoding variants over session 20's greedy rule (end_bias 0), per setting and
pooled over the four settings (the rule in README.md). Usage: summarize.py [METHOD] (sac or ft)."""
import json, math, sys
from pathlib import Path

here = Path(__file__).parent
method = sys.argv[1] if len(sys.argv) > 1 else "sac"
settings = ["sq", "sqr", "nq", "nqr"]
names = {"sq": "SQuAD gold", "sqr": "SQuAD among 4 distractors", "nq": "NQ-open gold", "nqr": "NQ-open among 4 distractors"}


def stats(d):
    n = len(d)
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    return 100 * m, 100 * sd / math.sqrt(n)


base, variants = {}, {}
for s in settings:
    f = here / f"{method}_{s}.json"
    if not f.exists():
        continue
    recs = json.loads(f.read_text())["records"]
    base[s] = {r["id"]: r["0.0"]["f1"] for r in recs}
    for r in recs:
        for k, v in r.items():
            if k not in ("id", "answers", "0.0"):
                variants.setdefault(k, {}).setdefault(s, {})[r["id"]] = v["f1"]
    for extra, keys in (("beam", ("beam4",)), ("passage", ("mass",))):
        b = here / f"{extra}_{method}_{s}.json"
        if b.exists():
            for r in json.loads(b.read_text())["records"]:
                for k in keys:
                    variants.setdefault(k, {}).setdefault(s, {})[r["id"]] = r[k]["f1"]
print(f"{method}: greedy grounded (end_bias 0) F1: " + ", ".join(f"{names[s]} {100 * sum(base[s].values()) / len(base[s]):.2f}" for s in base))
print("| variant | " + " | ".join(names[s] for s in settings if s in base) + " | pooled |")
print("|---|" + "---|" * (len(base) + 1))
for k, per in variants.items():
    cells, pooled = [], []
    for s in settings:
        if s not in base:
            continue
        if s not in per:
            cells.append("")
            continue
        d = [per[s][i] - base[s][i] for i in per[s]]
        pooled += d
        m, se = stats(d)
        cells.append(f"{m:+.2f} [{se:.2f}] ({len(d)})")
    m, se = stats(pooled)
    print(f"| {k} | " + " | ".join(cells) + f" | {m:+.2f} [{se:.2f}] |")
