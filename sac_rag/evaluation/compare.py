"""``sac-rag compare``: a paired comparison of eval runs on the same questions.

Two adapters (or methods) evaluated on one slice differ by a few F1 points, about the size of the noise of a
200-question mean. Comparing question by question removes the questions' own difficulty from that noise: this
module takes the per-question records written by ``sac-rag eval --json``, matches them by question id and gives the
mean difference, its standard error and how many questions went each way. It knows eval files, not models; it
refuses runs on different data or settings rather than compare unlike things.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InvalidInputError

__all__ = ["PairedDiff", "paired_difference", "load_eval"]

METRICS = ("f1", "em", "rouge1", "raw_em")
# an eval's settings that must agree for its questions to be the same questions, asked the same way
_SAME = ("data", "fmt", "parity", "passages", "seed", "shots", "max_new_tokens")


@dataclass(frozen=True)
class PairedDiff:
    """``candidate - reference`` on the questions both runs answered; scores in percent, as the reports print them."""

    reference: str
    candidate: str
    metric: str
    n: int
    reference_mean: float
    candidate_mean: float
    diff: float
    se: float  # standard error of ``diff`` (sample standard deviation of the differences / sqrt(n)); nan when n < 2
    better: int  # questions where the candidate scored higher
    worse: int
    ties: int

    def to_dict(self) -> dict:
        return asdict(self)


def load_eval(path: str | Path) -> dict:
    """An eval file written by ``sac-rag eval --json``, checked for the fields a comparison needs."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a readable eval file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("records"), list) or not isinstance(data.get("config"), dict):
        raise InvalidInputError(f"{path}: not an eval file (expected 'config' and 'records', as sac-rag eval --json writes)")
    data["_path"] = str(path)
    return data


def _by_id(run: dict, metric: str) -> dict:
    out = {}
    for i, rec in enumerate(run["records"]):
        if metric not in rec:
            raise InvalidInputError(f"{run.get('_path', 'eval')}: record {i} has no {metric!r}")
        key = rec.get("id", i)
        if key in out:
            raise InvalidInputError(f"{run.get('_path', 'eval')}: question id {key!r} appears twice")
        out[key] = float(rec[metric])
    return out


def paired_difference(reference: dict | str | Path, candidate: dict | str | Path, metric: str = "f1") -> PairedDiff:
    """Compare ``candidate`` with ``reference`` question by question (matched by id) on ``metric``.

    Both must be evals of the same data in the same setting (passages, shots, seed, answer length); their question
    slices may differ, and only the questions both answered count (``n``)."""
    if metric not in METRICS:
        raise InvalidInputError(f"metric {metric!r}: expected one of {METRICS}")
    ref = load_eval(reference) if not isinstance(reference, dict) else reference
    cand = load_eval(candidate) if not isinstance(candidate, dict) else candidate
    rc, cc = ref["config"], cand["config"]
    differ = [k for k in _SAME if rc.get(k) != cc.get(k)]
    if differ:
        detail = ", ".join(f"{k}: {rc.get(k)!r} vs {cc.get(k)!r}" for k in differ)
        raise InvalidInputError(f"these evals asked different questions or asked them differently ({detail})")
    r, c = _by_id(ref, metric), _by_id(cand, metric)
    keys = [k for k in r if k in c]
    if not keys:
        raise InvalidInputError(f"{ref.get('_path', 'reference')} and {cand.get('_path', 'candidate')} share no question")
    diffs = [100.0 * (c[k] - r[k]) for k in keys]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else math.nan
    return PairedDiff(
        reference=str(ref.get("_path", "reference")), candidate=str(cand.get("_path", "candidate")), metric=metric, n=n,
        reference_mean=100.0 * sum(r[k] for k in keys) / n, candidate_mean=100.0 * sum(c[k] for k in keys) / n,
        diff=mean, se=se, better=sum(d > 0 for d in diffs), worse=sum(d < 0 for d in diffs),
        ties=sum(d == 0 for d in diffs),
    )
