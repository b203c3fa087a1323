"""Reading QA data sets and plain text into one shape, :class:`QAExample`.

Formats: SQuAD JSON (v1.1, or v2.0 without its unanswerable questions), NQ-open oracle JSONL(.gz) (``ctxs`` with a gold
passage), MRQA JSONL (a header line, then ``context`` + ``qas``), a generic
JSONL (``question``, ``answers``, ``passages``), and plain text for
LM-continuation pretraining. Every example keeps the title/article of its
passage, so distractors can be drawn from the same article or others. This
module knows files and formats; nothing about models.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError

__all__ = ["QAExample", "load_examples", "load_text", "FORMATS"]

FORMATS = ("squad", "nq", "mrqa", "jsonl")


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    answers: tuple[str, ...]
    passages: tuple[str, ...]  # the gold passage(s) first
    article: str = ""
    index: int = 0  # position in the source file (NQ even/odd split)
    meta: dict = field(default_factory=dict, compare=False)


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _jsonl(path: Path):
    with _open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield json.loads(line)


def guess_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".json"):
        return "squad"
    if "nq" in name:
        return "nq"
    first = next(_jsonl(path), {})
    if "header" in first or "qas" in first:
        return "mrqa"
    if "ctxs" in first:
        return "nq"
    return "jsonl"


def load_examples(path: str | Path, fmt: str | None = None, *, parity: str | None = None) -> list[QAExample]:
    """Load QA examples; ``parity`` ('even'/'odd') keeps items by their index in the file (NQ split)."""
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown data format {fmt!r}; known: {FORMATS}")
    out: list[QAExample] = []
    if fmt == "squad":
        data = json.loads(path.read_text(encoding="utf-8"))
        for article in data["data"]:
            for p, para in enumerate(article["paragraphs"]):
                for q, qa in enumerate(para["qas"]):
                    answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                    if qa.get("is_impossible") or not answers:
                        continue  # SQuAD 2.0's unanswerable questions: nothing to train or score on
                    qid = qa.get("id") or f"{article['title']}/{p}/{q}"  # copies rebuilt from the SQuAD explorer pages have none
                    out.append(QAExample(qid, qa["question"], answers, (para["context"],), article["title"], len(out)))
    elif fmt == "nq":
        for i, row in enumerate(_jsonl(path)):
            gold = [c for c in row["ctxs"] if c.get("isgold", True)] or row["ctxs"][:1]
            passages = tuple(c["text"] for c in gold)
            out.append(QAExample(f"nq-{i}", row["question"], tuple(row["answers"]), passages, gold[0].get("title", ""), i))
    elif fmt == "mrqa":
        i = 0
        for row in _jsonl(path):
            if "header" in row:
                continue
            for qa in row["qas"]:
                answers = tuple(dict.fromkeys(qa.get("answers") or [a["text"] for a in qa.get("detected_answers", [])]))
                out.append(QAExample(qa.get("qid", f"mrqa-{i}"), qa["question"], answers, (row["context"],), row.get("id", ""), i))
                i += 1
    else:
        for i, row in enumerate(_jsonl(path)):
            passages = row.get("passages") or ([row["context"]] if "context" in row else [])
            out.append(QAExample(str(row.get("id", i)), row["question"], tuple(row["answers"]), tuple(passages), row.get("title", ""), i))
    if parity is not None:
        if parity not in ("even", "odd"):
            raise InvalidInputError(f"parity must be 'even' or 'odd', got {parity!r}")
        want = 0 if parity == "even" else 1
        out = [e for e in out if e.index % 2 == want]
    return out


def load_text(path: str | Path) -> list[str]:
    """Plain text for pretraining: paragraphs separated by blank lines (one document per file)."""
    text = Path(path).read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def articles(examples: list[QAExample]) -> dict[str, list[str]]:
    """Distinct passages per article, in order of appearance (distractor pools and LM-continuation text)."""
    out: dict[str, list[str]] = {}
    for e in examples:
        seen = out.setdefault(e.article or e.id, [])
        for p in e.passages:
            if p not in seen:
                seen.append(p)
    return out
