"""The collector behind docs/reliability.md renders what it counted, and the session hook writes it."""

from __future__ import annotations

import pytest

from reliability import conftest
from sac_rag import InvalidInputError


def test_collector_counts_and_renders():
    c = conftest.Collector()
    c.outcome("inputs", "empty -> f", lambda x: x, "fine")
    with pytest.raises(TypeError):
        c.outcome("inputs", "empty -> f", lambda: 1 + "x")  # not a SACError: recorded, then raised

    def refuse():
        raise InvalidInputError("no")

    c.outcome("inputs", "huge -> f", refuse)
    c.record("caches", "truncated file", "recomputed", 3)
    c.note("caches", "truncated file", "seed 1")
    c.tests["passed"] += 2
    text = c.markdown()
    assert text.startswith("# Reliability and security report")
    assert conftest.REGENERATE in text.splitlines()[2]
    assert "| f | 1 NOT A SACError: TypeError, 1 ok | 1 invalid | 3 |" in text
    assert "| truncated file | 3 | recomputed 3; seed 1 |" in text
    assert "Exceptions that were not a `SACError`: **1**" in text and "**Tests: 2 passed, 0 failed.**" in text


def test_the_report_is_written_only_when_asked(tmp_path, monkeypatch):
    target = tmp_path / "docs" / "reliability.md"
    monkeypatch.delenv("SAC_RELIABILITY_REPORT", raising=False)
    monkeypatch.chdir(tmp_path)
    conftest.pytest_sessionfinish(None, 0)
    assert list(tmp_path.iterdir()) == [], "nothing written without SAC_RELIABILITY_REPORT"
    c = conftest.Collector()
    c.record("files", "a pickle", "refused")
    conftest.write_report(c, target)
    assert "| a pickle | 1 | refused 1 |" in target.read_text(encoding="utf-8")
