"""Session 25: the results tables' sac 5x files of the new default (NEW folder) paired against the old default's
(OLD folder), per file and pooled by group; the relevance-order runs of both are read from ORDERING.
Usage, from the repository's root: python3 docs/evals/selection/s25/compare.py docs/evals docs/evals/previous-x5-s18
[docs/evals/ordering] [RATIO]; session 26 paired the 15x adapters with RATIO 15 (its files are named sac15 where these
say sac5; the bar's bf16 and two-shot runs were not made at 15x and print as missing):
python3 docs/evals/selection/s25/compare.py docs/evals docs/evals/previous-x15-s16 docs/evals/ordering 15
The relevance-order files are named sac5NEWTAG (new) and sac5OLDTAG (old) in ORDERING, "gl75" and "" unless given as the
fifth and sixth arguments; session 28 paired the session-27 adapter against gl75 with
python3 docs/evals/selection/s25/compare.py docs/evals docs/evals/previous-x5-s25 docs/evals/ordering 5 s27 gl75"""
import json, math, sys
from pathlib import Path

new, old = Path(sys.argv[1]), Path(sys.argv[2])
ordering = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("docs/evals/ordering")
tag = f"sac{sys.argv[4] if len(sys.argv) > 4 else 5}"
new_tag = sys.argv[5] if len(sys.argv) > 5 else "gl75"
old_tag = sys.argv[6] if len(sys.argv) > 6 else ""
files = {  # file -> group
    "squad500_sac5_grounded.json": "gold alone, grounded", "nq500_sac5_grounded.json": "gold alone, grounded",
    "squad500_rag5_sac5gl75_grounded_relevance.json": "relevance order, grounded",
    "nq500_rag5_sac5gl75_grounded_relevance.json": "relevance order, grounded",
    "squad500_rag5_sac5_grounded.json": "random order, grounded", "nq500_rag5_sac5_grounded.json": "random order, grounded",
    "squad500_sac5.json": "gold alone, free", "nq500_sac5.json": "gold alone, free",
    "squad500_rag5_sac5.json": "random order, free", "nq500_rag5_sac5.json": "random order, free",
    "squad_sac5.json": "the bar (200 q)", "squad_sac5_bf16.json": "the bar (200 q)",
    "squad_sac5_2shot.json": "two shots (200 q)",
}
old_rel = {"squad500_rag5_sac5gl75_grounded_relevance.json": "squad500_rag5_sac5_grounded_relevance.json",
           "nq500_rag5_sac5gl75_grounded_relevance.json": "nq500_rag5_sac5_grounded_relevance.json"}
files = {f.replace("sac5gl75", "sac5" + new_tag).replace("sac5", tag): g for f, g in files.items()}
old_rel = {k.replace("sac5gl75", "sac5" + new_tag).replace("sac5", tag): v.replace("sac5", tag + old_tag)
           for k, v in old_rel.items()}


def load(p):
    return {r["id"]: r["f1"] for r in json.loads(p.read_text())["records"]} if p.exists() else None


def stats(d):
    m = sum(d) / len(d)
    return 100 * m, 100 * math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))


groups = {}
print("| file | old F1 | new F1 | paired gain [se] | better / worse |\n|---|---|---|---|---|")
for f, g in files.items():
    a, b = (load(ordering / f), load(ordering / old_rel[f])) if f in old_rel else (load(new / f), load(old / f))
    if a is None or b is None:
        print(f"| {f} | (missing) | {'' if a is None else f'{100 * sum(a.values()) / len(a):.1f}'} | | |")
        continue
    assert a.keys() == b.keys(), f
    d = [a[k] - b[k] for k in a]
    groups.setdefault(g, []).extend(d)
    m, se = stats(d)
    print(f"| {f} | {100*sum(b.values())/len(b):.1f} | {100*sum(a.values())/len(a):.1f} | {m:+.2f} [{se:.2f}] | "
          f"{sum(x > 0 for x in d)} / {sum(x < 0 for x in d)} |")
print()
for g, d in groups.items():
    m, se = stats(d)
    print(f"| {g} ({len(d)} answers) | {m:+.2f} [{se:.2f}] |")
integ = groups.get("gold alone, grounded", []) + groups.get("relevance order, grounded", [])
if integ:
    m, se = stats(integ)
    print(f"| the integrations' settings: gold alone + relevance order, grounded ({len(integ)}) | {m:+.2f} [{se:.2f}] |")
