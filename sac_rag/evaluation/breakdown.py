"""``sac-rag breakdown``: where an eval run's answers went wrong, question by question.

An F1 gap between two methods can come from picking the wrong part of the passage or from not reproducing the
passage's words (a garbled name, a wrong digit). This module sorts each answer of a ``sac-rag eval --json`` run
into one of: ``exact`` (EM 1), ``partial`` (F1 above 0), and for F1 0: ``gold_passage`` (the answer is a span of the
gold passage, the wrong one), ``distractor`` (a span of another passage the question was given), ``no_passage``
(in none of them: invented or garbled) or ``empty``. A span is a run of whole words after SQuAD normalisation.
For a grounded run (its records carry the answer's ``span``), it also counts the answers taken from the gold
passage, whatever their score: with distractors, how often the decoder chose the right passage. With
distractors it also gives the mean F1 by the gold passage's place in the prompt, counted from the end (1: the last
passage, nearest the question): in a run ordered by relevance, the questions where the retriever did not rank the
gold passage first are the ones where it is not last, which is what an adapter trained to lean on the last passage
risks.

It re-derives each question's passages from the run's recorded config (data file, shuffle seed, offset, passage
count) with the harness's own selection, so it needs the data file (``data`` overrides a path recorded on another
machine) and checks every question id against the records. It knows eval files and data; it loads no model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import InvalidInputError
from .compare import load_eval
from .metrics import normalize

__all__ = ["Breakdown", "CATEGORIES", "breakdown", "gold_place"]

CATEGORIES = ("exact", "partial", "gold_passage", "distractor", "no_passage", "empty")


@dataclass(frozen=True)
class Breakdown:
    """How many answers of one run fell into each category; ``ids`` lists the question ids of each."""

    path: str
    method: str
    n: int
    counts: dict[str, int]
    ids: dict[str, list[str]]
    # grounded runs: the answers whose span lies in the gold passage, and those with a span at all (None: the
    # records carry no spans, a free-decoding run)
    from_gold: int | None = None
    spans: int | None = None
    # with distractors: the gold passage's place counted from the end (1: last) -> {"n": questions, "f1": mean F1,
    # in percent}; empty for runs with one passage a question
    by_gold_place: dict[int, dict[str, float]] = field(default_factory=dict)

    def share(self, category: str) -> float:
        """The percentage of the run's answers in ``category``."""
        return 100.0 * self.counts[category] / self.n if self.n else 0.0

    def gold_share(self) -> float | None:
        """The percentage of the answers with a span that came from the gold passage (None: no spans)."""
        return 100.0 * self.from_gold / self.spans if self.spans else None

    def to_dict(self) -> dict:
        return asdict(self)


def _is_span(answer: str, passage: str) -> bool:
    return f" {answer} " in f" {normalize(passage)} "


def gold_place(gold_passage: str, passages: list[str]) -> int:
    """Where the gold passage sits in a question's prompt, counted from the end: 1 is the last passage, nearest the
    question."""
    return len(passages) - list(passages).index(gold_passage)


def categorize(record: dict, gold_passage: str, passages: list[str]) -> str:
    """One answer's category (see the module's docstring)."""
    if float(record["em"]) == 1.0:
        return "exact"
    if float(record["f1"]) > 0.0:
        return "partial"
    answer = normalize(record["prediction"])
    if not answer:
        return "empty"
    if _is_span(answer, gold_passage):
        return "gold_passage"
    if any(_is_span(answer, p) for p in passages if p != gold_passage):
        return "distractor"
    return "no_passage"


def breakdown(path: str | Path, *, data: str | Path | None = None) -> Breakdown:
    """Sort the answers of the eval file ``path`` by where they went wrong (``data``: the data file, if it is
    not where the run recorded it)."""
    from .qa import EvalConfig, select_examples

    run = load_eval(path)
    known = {f.name for f in fields(EvalConfig)}
    try:
        cfg = EvalConfig(**{k: v for k, v in run["config"].items() if k in known})
    except TypeError as exc:
        raise InvalidInputError(f"{path}: its config is not an eval config ({exc})") from exc
    records = run["records"]
    # the selection is deterministic given the config; ask for as many questions as the run answered
    cfg = replace(cfg, data=str(data or cfg.data), limit=len(records))
    if not Path(cfg.data).exists():
        raise InvalidInputError(f"{path}: its data file {cfg.data} is not here; pass the data file's path")
    items = select_examples(cfg)
    if len(items) < len(records):
        raise InvalidInputError(f"{path}: {len(records)} answers but the data gives only {len(items)} questions")
    counts = {c: 0 for c in CATEGORIES}
    ids: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    from_gold = spans = 0
    places: dict[int, list[float]] = {}
    for i, ((example, passages), record) in enumerate(zip(items, records)):
        if record.get("id") != example.id:
            raise InvalidInputError(f"{path}: answer {i} is for question {record.get('id')!r}, but the data gives "
                                    f"{example.id!r} there (another data file, or another version of it?)")
        category = categorize(record, example.passages[0], list(passages))
        counts[category] += 1
        ids[category].append(example.id)
        if len(passages) > 1:
            places.setdefault(gold_place(example.passages[0], passages), []).append(float(record["f1"]))
        span = record.get("span")
        if isinstance(span, dict):
            where = span.get("passage")
            if not isinstance(where, int) or not 0 <= where < len(passages):
                raise InvalidInputError(f"{path}: answer {i}'s span names passage {where!r}, but the question had "
                                        f"{len(passages)}")
            spans += 1
            from_gold += passages[where] == example.passages[0]
    grounded = any("span" in r for r in records)
    return Breakdown(str(path), str(run["config"].get("method", "?")), len(records), counts, ids,
                     from_gold if grounded else None, spans if grounded else None,
                     {k: {"n": len(v), "f1": 100.0 * sum(v) / len(v)} for k, v in sorted(places.items())})
