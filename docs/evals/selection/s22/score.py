"""Session 22's rule (README.md): paired F1 of one run against another, per setting and pooled, with standard
errors. Usage: score.py CANDIDATE REFERENCE [FOLDER] (run names: pc1, control, default; FOLDER: where the eval files
are, this one by default; sessions 23 and 24 read ../s23 and ../s24 with it). Settings: sq/nq gold passage alone,
sqr/nqr among 4 distractors in random order, sqo/nqo among 4 distractors in relevance order (session 24), sqd/nqd
among the 4 retrieved distractors (nearest the question by MiniLM, no answer in them) in relevance order (session 27);
td/tdd and nw/nwd the same two settings on TyDi QA GoldP English and SQuADShifts new_wiki (session 31), am/amd
on SQuADShifts amazon (session 33's second rule). A fourth
argument, settings joined by commas, prints their pool too (session 31's second rule pools td,nw,tdd,nwd and reads
its guard nq on its own)."""
import json, math, sys
from pathlib import Path

cand, ref = sys.argv[1], sys.argv[2]
here = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).parent
rule = sys.argv[4].split(",") if len(sys.argv) > 4 else []
ruled = []
names = {"sq": "SQuAD gold", "sqr": "SQuAD among 4 distractors", "sqo": "SQuAD among 4 distractors, relevance order",
         "nq": "NQ-open gold", "nqr": "NQ-open among 4 distractors", "nqo": "NQ-open among 4 distractors, relevance order",
         "sqd": "SQuAD among 4 retrieved distractors, relevance order",
         "nqd": "NQ-open among 4 retrieved distractors, relevance order",
         "td": "TyDi QA English gold", "nw": "SQuADShifts new_wiki gold",
         "tdd": "TyDi QA English among 4 retrieved distractors, relevance order",
         "nwd": "SQuADShifts new_wiki among 4 retrieved distractors, relevance order",
         "am": "SQuADShifts amazon gold", "amd": "SQuADShifts amazon among 4 retrieved distractors, relevance order"}


def f1s(run, setting):
    path = here / f"{run}_{setting}.json"
    return {r["id"]: r["f1"] for r in json.loads(path.read_text())["records"]} if path.exists() else None


def stats(d):
    m = sum(d) / len(d)
    return 100 * m, 100 * math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))


pooled, distractors, relevance, integrations, retrieved, gold_retrieved = [], [], [], [], [], []
print(f"| setting | {cand} F1 | {ref} F1 | paired gain [standard error] |\n|---|---|---|---|")
for s, name in names.items():
    a, b = f1s(cand, s), f1s(ref, s)
    if a is None or b is None:
        if s in ("sq", "nq", "sqr", "nqr"):  # the settings every rule since session 22 ran
            print(f"| {name} | (not run) | | |")
        continue
    assert a.keys() == b.keys(), f"{s}: the runs answered different questions"
    d = [a[k] - b[k] for k in a]
    pooled += d
    if s in rule:
        ruled += d
    if s.endswith("r"):
        distractors += d
    if s.endswith("o"):
        relevance += d
    if s in ("sq", "nq", "sqo", "nqo"):
        integrations += d
    if s in ("sqd", "nqd", "tdd", "nwd", "amd"):
        retrieved += d
    if s in ("sq", "nq", "sqd", "nqd", "td", "nw", "tdd", "nwd", "am", "amd"):
        gold_retrieved += d
    m, se = stats(d)
    print(f"| {name} | {100 * sum(a.values()) / len(a):.2f} | {100 * sum(b.values()) / len(b):.2f} | {m:+.2f} [{se:.2f}] |")
groups = [("among distractors", distractors)]
if relevance:  # session 24's rule pools the integrations' settings, and reads random order on its own
    groups = [("among distractors, random order", distractors), ("relevance order", relevance),
              ("gold alone and relevance order", integrations)]
if retrieved:  # session 27's rule pools gold alone with the retrieved distractors
    groups += [("retrieved distractors", retrieved), ("gold alone and retrieved distractors", gold_retrieved)]
if rule:
    groups.append(("the rule's pool: " + ", ".join(rule), ruled))
for label, d in (*groups, ("pooled", pooled)):
    if len(d) > 1:
        m, se = stats(d)
        print(f"| {label} ({len(d)} answers) | | | {m:+.2f} [{se:.2f}] |")
