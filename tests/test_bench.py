"""`sac-rag bench` on a tiny saved model: every section measured, ratios consistent with the times, report written."""

from __future__ import annotations

import json

import pytest

from sac_rag.evaluation.bench import BenchConfig, _median_times, run_bench
from sac_rag.testing import byte_tokenizer, tiny_llama

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_median_times_interleaves_and_runs_setups():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    setups = {"b": lambda: calls.append("setup-b")}
    out = _median_times(fns, repeats=3, setups=setups)
    assert set(out) == {"a", "b", "c"} and all(v >= 0 for v in out.values())
    runs = [c for c in calls if not c.startswith("setup")]
    assert runs == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]  # warm-up, then rotating rounds
    assert calls.count("setup-b") == calls.count("b") == 4  # before every run of b
    assert all(calls[i - 1] == "setup-b" for i, c in enumerate(calls) if c == "b")


def test_bench_on_a_tiny_model(tmp_path):
    base = tmp_path / "base"
    tiny_llama(seed=0).save_pretrained(base)
    byte_tokenizer().save_pretrained(base)
    cfg = BenchConfig(model=str(base), dtype="float32", ks=(1, 3), ratios=(4,), lengths=(64, 256), repeats=1,
                      decode_tokens=3, out_dir=str(tmp_path / "out"))
    res = run_bench(cfg, progress=False)
    assert [(r["ratio"], r["k"]) for r in res["ttft"]] == [(4, 1), (4, 3)]
    for r in res["ttft"]:
        assert r["prompt_tokens_full"] > 0
        assert r["speedup_memory"] == pytest.approx(r["full_s"] / r["sac_memory_s"])
        assert r["cold_vs_full"] == pytest.approx(r["sac_cold_s"] / r["full_s"])
    (tp,) = res["throughput"]
    assert tp["single_vs_prefill"] == pytest.approx(tp["single_tokens_per_s"] / tp["prefill_tokens_per_s"])
    for m in res["memory"]:
        assert 0 < m["sac_kv_bytes"] < m["full_kv_bytes"]
        assert m["bytes_ratio"] <= 1 / 4 + 0.02  # one anchor per 4 tokens, rounded up per sub-context
    assert [s["tokens"] for s in res["scaling"]] == [64, 256]
    assert res["decode"][0]["sac_tokens_per_s"] > 0 and res["peak_rss_mb"] > 0
    written = json.loads((tmp_path / "out" / "benchmarks.json").read_text())
    assert written["ttft"] == res["ttft"] and written["machine"]["cores"] >= 1
    report = (tmp_path / "out" / "benchmarks.md").read_text()
    assert "## Time to first token" in report and "## Compression throughput" in report
    assert "## Against the bar" not in report  # the bar is stated at k = 10, ratio 5, which this run skips
    assert (tmp_path / "out" / "bench_ttft_k.png").stat().st_size > 0


def test_headline_and_bar_section():
    from sac_rag.evaluation.bench import _bar_lines, headline

    results = {
        "ttft": [{"ratio": 5, "k": 10, "speedup_memory": 8.0, "speedup_disk": 4.0, "cold_vs_full": 1.1}],
        "throughput": [{"ratio": 5, "batched_vs_prefill": 0.7, "single_vs_prefill": 0.95}],
        "memory": [{"ratio": 5, "bytes_ratio": 0.19}, {"ratio": 5, "bytes_ratio": 0.21}],
    }
    h = headline(results)
    assert h == {"ratio": 5, "k": 10, "stored_speedup": 8.0, "disk_speedup": 4.0, "cold_vs_full": 1.1,
                 "compression_vs_prefill": 0.95, "bytes_ratio": 0.21}
    lines = "\n".join(_bar_lines(results))
    assert "| 8.0x faster | >= 5x | meets |" in lines and "| 4.0x faster | >= 5x | misses |" in lines
    assert "| 0.210 | <= 0.200 | misses |" in lines and "| 0.95 | >= 0.9 | meets |" in lines
    assert headline(results, k=20) is None
