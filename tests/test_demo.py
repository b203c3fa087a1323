"""`sac-rag demo` end to end on the embedded models (slow): index, precompress, answer with SAC and full context."""

from __future__ import annotations

import re

import pytest

from sac_rag.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_and_reads_every_passage_from_the_store(capsys):
    assert main(["demo", "--questions", "2", "--no-disk"]) == 0
    out = capsys.readouterr().out
    assert "Adapter: " in out and "UNTRAINED" not in out  # the shipped 5x adapter
    # its training record: the last run's examples and, since it continued an earlier adapter, all of them
    assert re.search(r"Adapter: .*\(trained: qa stage, (?:[\d,]+ steps, )?[\d,]+ examples \([\d,]+ in all\)", out)
    assert "Indexed 40 passages" in out
    assert re.search(r"Precompressed: 40 compressed now, 0 already in the store \(memory\)", out)
    assert out.count("   SAC : ") == 2 and out.count("   full: ") == 2
    # grounded decoding: each answer is named as a span of one of the 3 retrieved passages (best-ranked last)
    assert len(re.findall(r"   SAC, grounded: .* a span of passage [123] of 3 \(the best-ranked is 3\)", out)) == 2
    scores = re.search(r"Mean F1 .* over these 2 questions .*: SAC (\d+\.\d), SAC, grounded (\d+\.\d), full context (\d+\.\d)", out)
    assert scores and all(0.0 <= float(v) <= 100.0 for v in scores.groups())
    first = re.search(r"Median time to first token: SAC ([\d.]+) s, full context ([\d.]+) s", out)
    assert first and float(first.group(1)) > 0 and float(first.group(2)) > 0
    # the 2 questions' passages were all found in the store: hits, and no misses beyond the 40 precompressed
    hits, misses = map(int, re.search(r"\((\d+) hits, (\d+) misses\)", out).groups())
    assert misses == 40 and hits >= 2 * 3
