"""QA metrics: SQuAD-normalized EM/F1 (max over gold answers) and the paper's ROUGE-1 F / raw EM (first gold).

Pure string functions; no models, no files.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

__all__ = ["normalize", "exact_match", "f1", "rouge1_f", "raw_exact_match", "score"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD v1.1 normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1_tokens(pred: list[str], gold: list[str]) -> float:
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if not pred or not gold:
        return float(pred == gold)
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return max(float(normalize(prediction) == normalize(a)) for a in answers)


def f1(prediction: str, answers: Sequence[str]) -> float:
    return max(_f1_tokens(normalize(prediction).split(), normalize(a).split()) for a in answers)


def rouge1_f(prediction: str, answer: str) -> float:
    """ROUGE-1 F: unigram overlap of lower-cased alphanumeric tokens (what the paper calls F1)."""
    tok = lambda s: re.findall(r"[a-z0-9]+", s.lower())  # noqa: E731
    return _f1_tokens(tok(prediction), tok(answer))


def raw_exact_match(prediction: str, answer: str) -> float:
    """The paper's EM: the stripped prediction equals the first gold answer, unnormalized."""
    return float(prediction.strip() == answer.strip())


def score(prediction: str, answers: Sequence[str]) -> dict[str, float]:
    return {
        "em": exact_match(prediction, answers),
        "f1": f1(prediction, answers),
        "rouge1": rouge1_f(prediction, answers[0]),
        "raw_em": raw_exact_match(prediction, answers[0]),
    }
