"""Selection rules over rerank.py's per-passage answers, paired against greedy grounding over all passages
(end_bias.py's "0.0" rows on the same questions). Usage: rerank_score.py METHOD (sac or ft)."""
import json, math, sys
from pathlib import Path

here = Path(__file__).parent
method = sys.argv[1] if len(sys.argv) > 1 else "sac"
RULES = {
    "first token": lambda a: a["logps"][0] if a["logps"] else -1e9,
    "mean log-prob": lambda a: sum(a["logps"]) / len(a["logps"]) if a["logps"] else -1e9,
    "summed log-prob": lambda a: sum(a["logps"]) if a["logps"] else -1e9,
    "lowest token": lambda a: min(a["logps"]) if a["logps"] else -1e9,
}


def stats(d):
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
    return 100 * m, 100 * sd / math.sqrt(len(d))


pooled = {r: [] for r in [*RULES, "two-stage", "gold passage alone", "best possible"]}
for s, name in (("sqr", "SQuAD among 4 distractors"), ("nqr", "NQ-open among 4 distractors")):
    f = here / f"rerank_{method}_{s}.json"
    if not f.exists():
        continue
    recs = json.loads(f.read_text())["records"]
    base = {r["id"]: r["0.0"]["f1"] for r in json.loads((here / f"{method}_{s}.json").read_text())["records"]}
    print(f"{name} ({len(recs)} q): greedy over all passages {100 * sum(base[r['id']] for r in recs) / len(recs):.2f}")
    for rule, key in RULES.items():
        d = [max(r["per_passage"], key=key)["f1"] - base[r["id"]] for r in recs]
        picked_gold = sum(r["per_passage"].index(max(r["per_passage"], key=key)) == r["gold"] for r in recs)
        pooled[rule] += d
        print(f"  {rule}: {stats(d)[0]:+.2f} [{stats(d)[1]:.2f}], picks the gold passage {picked_gold}")
    # two-stage: the passage with the most first-token mass reading all (rerank.py's "mass", or for the SQuAD run,
    # which predates it, passage.py's pick on the same questions), answered from alone
    picks = {r["id"]: max(range(5), key=lambda i: r["mass"][i]) for r in recs if "mass" in r}
    pf = here / f"passage_{method}_{s}.json"
    if pf.exists():
        for r in json.loads(pf.read_text())["records"]:
            picks.setdefault(r["id"], r["mass"]["passage"])
    if all(r["id"] in picks for r in recs):
        d = [r["per_passage"][picks[r["id"]]]["f1"] - base[r["id"]] for r in recs]
        pooled["two-stage"] += d
        print(f"  two-stage: {stats(d)[0]:+.2f} [{stats(d)[1]:.2f}], picks the gold passage {sum(picks[r['id']] == r['gold'] for r in recs)}")
    for rule, pick in (("gold passage alone", lambda r: r["per_passage"][r["gold"]]["f1"]),
                       ("best possible", lambda r: max(a["f1"] for a in r["per_passage"]))):
        d = [pick(r) - base[r["id"]] for r in recs]
        pooled[rule] += d
        print(f"  {rule}: {stats(d)[0]:+.2f} [{stats(d)[1]:.2f}]")
print("pooled:", {r: "%+.2f [%.2f]" % stats(d) for r, d in pooled.items() if len(d) > 1})
