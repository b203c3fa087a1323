"""Session 26: paired F1 of two adapters by the gold passage's place in the prompt (counted from the end, 1: last),
pooled over pairs of eval files run on the same questions in the same passage setting (random order in session 26;
retrieved distractors in relevance order in session 27). What an adapter trained to lean on the last passage costs
when the gold passage is not last (a retriever whose top passage is wrong).
Usage, from the repository's root: python3 docs/evals/selection/s26/places.py NEW_1 OLD_1 [NEW_2 OLD_2 ...]"""
import json, math, sys
from dataclasses import fields

from sac_rag.evaluation.breakdown import gold_place
from sac_rag.evaluation.qa import EvalConfig, select_examples

pairs = list(zip(sys.argv[1::2], sys.argv[2::2]))
by_place: dict[int, list[float]] = {}
for new, old in pairs:
    a, b = (json.load(open(p)) for p in (new, old))
    same = ("fmt", "parity", "passages", "limit", "offset", "seed")
    ca, cb = a["config"], b["config"]
    assert all(ca.get(k) == cb.get(k) for k in same) and ca.get("order", "random") == cb.get("order", "random") \
        and ca.get("distractors", "random") == cb.get("distractors", "random") and ca["data"].split("/")[-1] == cb["data"].split("/")[-1], f"{new} and {old} were not run on the same questions"
    known = {f.name for f in fields(EvalConfig)}
    cfg = EvalConfig(**{k: v for k, v in a["config"].items() if k in known})
    items = select_examples(cfg)
    for (example, passages), ra, rb in zip(items, a["records"], b["records"]):
        assert ra["id"] == rb["id"] == example.id
        by_place.setdefault(gold_place(example.passages[0], passages), []).append(ra["f1"] - rb["f1"])


def stats(d):
    m = sum(d) / len(d)
    return 100 * m, 100 * math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))


print("| gold passage's place (1: last) | questions | paired F1 gain [se] |\n|---|---|---|")
for place in sorted(by_place):
    m, se = stats(by_place[place])
    print(f"| {place} | {len(by_place[place])} | {m:+.2f} [{se:.2f}] |")
rest = [x for p, d in by_place.items() if p > 1 for x in d]
m, se = stats(rest)
print(f"| not last (2-{max(by_place)}) | {len(rest)} | {m:+.2f} [{se:.2f}] |")
