"""The reliability suite's shared pieces: a tiny model, and a collector that counts what the tests tried.

Every test records what it did (inputs tried per category, faults injected, requests served) and what came of
it. With ``SAC_RELIABILITY_REPORT=<path>`` set, the counts are written there as a markdown table when the
session ends; docs/reliability.md is made that way::

    SAC_RELIABILITY_REPORT=docs/reliability.md OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/reliability
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from sac_rag import SACError

REGENERATE = "SAC_RELIABILITY_REPORT=docs/reliability.md OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/reliability"

# Sections of the report, in order, with what they show.
SECTIONS = {
    "inputs": ("Bad and arbitrary input", "Each input is sent to the entry point named; the outcome is the error type raised "
               "(all are `SACError` subclasses) or `ok` where the input is valid text. After every bad input the same model "
               "is checked to still compress and answer exactly as before."),
    "properties": ("Property-based tests (hypothesis)", "Arbitrary text from every Unicode category (surrogates, controls, "
                   "private use and unassigned code points included): success or a `SACError`, never another exception."),
    "caches": ("Corrupted caches and killed writers", "Faults injected into a KVStore directory; `recomputed` means "
               "SACCompressor ignored the stored file and its fresh KV equals a fresh compression."),
    "concurrency": ("Load held", "Concurrent requests through the integrations, compared with serial greedy runs of the "
                    "same prompts, with a small KVStore budget forcing evictions and recompression."),
    "forgery": ("Forged references and store ids", "Markers that the compressor did not issue, and store keys that try to "
                "leave the store directory."),
    "files": ("Untrusted files", "Only safetensors and JSON are read; pickles are refused without being unpickled."),
    "pairing": ("Wrong pairing", "An adapter or KV made for another base model, ratio or format version; the message says "
                "what to do (key words asserted)."),
}


LIMITS = [
    "An empty or whitespace-only chat message is accepted (the chat layout still gives the model text to read); an "
    "empty message list, an empty prompt, and empty or whitespace-only passages and questions are refused.",
    "Generation segments may hold NUL and other control characters (they are text to the tokenizer); passages may "
    "not hold NUL (a sign of binary data).",
    "Markers are scoped to the SACCompressor that issued them, not to a request: a marker issued for an earlier "
    "request resolves in a later prompt. Use one compressor per tenant or trust domain. A question holding a marker "
    "is refused at retrieval (SACDocumentCompressor / SACPostprocessor call check_query).",
    "The KV store directory must be writable by the service only: a file rewritten with this model's fingerprint, "
    "the right shape and a valid checksum but other values cannot be told from a real one (checksums are not keyed).",
    "Framework input validation happens before sac-rag sees a value: LangChain rejects a non-message input itself, "
    "and LlamaIndex's ChatMessage turns non-text content into an empty message.",
]


class Collector:
    """Counts (section, case, outcome) triples; notes add free text to a row."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.notes: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.order: list[tuple[str, str]] = []
        self.tests: Counter = Counter()
        self.seconds = 0.0  # time spent in this suite's tests (setup, call, teardown)

    def record(self, section: str, case: str, outcome: str, n: int = 1) -> None:
        assert section in SECTIONS, section
        if (section, case) not in self.order:
            self.order.append((section, case))
        self.counts[(section, case, outcome)] += n

    def note(self, section: str, case: str, text: str) -> None:
        if (section, case) not in self.order:
            self.order.append((section, case))
        if text not in self.notes[(section, case)]:
            self.notes[(section, case)].append(text)

    def outcome(self, section: str, case: str, fn, *args, **kwargs):
        """Call ``fn``; record ``ok`` or the SACError's type name and return (result, error).
        Any other exception is recorded as ``NOT A SACError`` and re-raised: that is a bug."""
        try:
            result = fn(*args, **kwargs)
        except SACError as exc:
            self.record(section, case, type(exc).__name__)
            return None, exc
        except BaseException as exc:
            self.record(section, case, f"NOT A SACError: {type(exc).__name__}")
            raise
        self.record(section, case, "ok")
        return result, None

    def rows(self, section: str):
        for sec, case in self.order:
            if sec != section:
                continue
            outcomes = {o: n for (s, c, o), n in self.counts.items() if s == sec and c == case}
            tried = sum(outcomes.values())
            cell = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])))
            notes = "; ".join(self.notes.get((sec, case), []))
            yield case, tried, "; ".join(x for x in (cell, notes) if x)

    def totals(self) -> dict[str, int]:
        out: Counter = Counter()
        for (sec, _, o), n in self.counts.items():
            out[sec] += n
            if o.startswith("NOT A SACError"):
                out["non_sac_errors"] += n
        return dict(out)

    def markdown(self) -> str:
        totals = self.totals()
        elapsed = self.seconds
        passed, failed = self.tests["passed"], self.tests["failed"]
        lines = [
            "# Reliability and security report",
            "",
            f"Generated by a test run: `{REGENERATE}`",
            f"(date {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, machine: {machine()}, "
            f"{elapsed:.0f} s for the suite).",
            "Do not edit by hand: every number below is counted by tests/reliability while it runs.",
            "",
            f"**Tests: {passed} passed, {failed} failed.** Inputs and faults recorded: "
            + ", ".join(f"{SECTIONS[s][0].lower()} {totals.get(s, 0)}" for s in SECTIONS)
            + f". Exceptions that were not a `SACError`: **{totals.get('non_sac_errors', 0)}**.",
            "",
        ]
        for sec, (title, blurb) in SECTIONS.items():
            rows = list(self.rows(sec))
            if not rows:
                continue
            lines += [f"## {title}", "", blurb, ""]
            matrix = [r for r in rows if " -> " in r[0]]
            if matrix:
                lines += self._matrix(sec, [r[0] for r in matrix]) + [""]
            rest = [r for r in rows if " -> " not in r[0]]
            if rest:
                lines += ["| Case | Tried | Outcome |", "| --- | ---: | --- |"]
                lines += [f"| {_md(case)} | {tried} | {_md(cell)} |" for case, tried, cell in rest]
                lines.append("")
        lines += ["## Behaviour by design, and limits", ""] + [f"- {x}" for x in LIMITS] + [""]
        return "\n".join(lines)

    def _matrix(self, section: str, cases: list[str]) -> list[str]:
        """Cases named ``<category> -> <entry point>`` as a table: one row per entry point, one column per category."""
        cats = list(dict.fromkeys(c.split(" -> ", 1)[0] for c in cases))
        entries = list(dict.fromkeys(c.split(" -> ", 1)[1] for c in cases))
        lines = ["| Entry point | " + " | ".join(cats) + " | Tried |", "| --- |" + " --- |" * len(cats) + " ---: |"]
        footnotes: list[str] = []
        for entry in entries:
            cells, total = [], 0
            for cat in cats:
                outcomes = {o: n for (s, c, o), n in self.counts.items() if s == section and c == f"{cat} -> {entry}"}
                total += sum(outcomes.values())
                cell = ", ".join(f"{n} {_short(o)}" for o, n in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])))
                for note in self.notes.get((section, f"{cat} -> {entry}"), []):
                    if note not in footnotes:
                        footnotes.append(note)
                    cell += f" (note {footnotes.index(note) + 1})"
                cells.append(cell or "-")
            lines.append(f"| {_md(entry)} | " + " | ".join(_md(c) for c in cells) + f" | {total} |")
        lines += ["", "Cells: how many inputs of the column's category got each outcome: `ok`; `invalid` = "
                  "InvalidInputError; `too large` = InputTooLargeError (a subclass of it); `framework` = the framework's "
                  "own message type (pydantic) refused the value, so sac-rag never saw it."]
        lines += [f"Note {i + 1}: {note}." for i, note in enumerate(footnotes)]
        return lines


_SHORT = {"InvalidInputError": "invalid", "InputTooLargeError": "too large",
          "refused by the framework (pydantic ValidationError)": "framework", "refused by the framework": "framework"}


def _short(outcome: str) -> str:
    return _SHORT.get(outcome, outcome)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def machine() -> str:
    from sac_rag.evaluation.bench import machine_info

    m = machine_info()
    return f"{m['cores']}-core {m['cpu']} CPU, {m['cuda'] or 'no GPU'}, torch {m['torch']}"


COLLECTOR = Collector()


@pytest.fixture(scope="session")
def report() -> Collector:
    return COLLECTOR


@pytest.fixture(scope="session")
def rsac():
    """A tiny Llama-shaped SACModel with a small input limit (300 tokens), shared by the suite."""
    from sac_rag.testing import tiny_sac

    return tiny_sac("llama", ratio=4, max_input_tokens=300)


def pytest_runtest_logreport(report):
    if "reliability" not in report.nodeid:
        return
    COLLECTOR.seconds += report.duration
    if report.when == "call" or report.outcome != "passed":
        COLLECTOR.tests[report.outcome] += 1


def write_report(collector: Collector, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(collector.markdown() + "\n", encoding="utf-8")


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("SAC_RELIABILITY_REPORT")
    if path and COLLECTOR.counts:
        write_report(COLLECTOR, path)
