"""``sac-rag bench``: speed and memory of SAC against full context, measured in one process.

Every figure is a median of ``repeats`` runs, and each SAC figure is also given
as a ratio against full context measured in the same run, on the same
machine (recorded in the report). Measured:

* time to first token (TTFT) for k retrieved passages: full-context prefill;
  SAC with stored KV (in memory; on disk with the memory tier cleared); SAC
  cold (compressed at query time);
* compression throughput, batched and one by one, against a plain prefill of
  the same tokens;
* decode tokens/s after the prompt;
* KV bytes per passage against the full KV of the same text, and peak RSS;
* scaling of TTFT with k and with passage length (log-log plot).

This module measures; it does not change how anything runs.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch

__all__ = ["BenchConfig", "run_bench", "machine_info", "headline"]


@dataclass
class BenchConfig:
    ks: tuple[int, ...] = (1, 5, 10, 20)
    ratios: tuple[int, ...] = (5, 15)
    lengths: tuple[int, ...] = (128, 256, 512, 1024, 2048)
    repeats: int = 5
    decode_tokens: int = 32
    model: str | None = None
    dtype: str | None = None
    out_dir: str = "docs"
    quick: bool = False

    def __post_init__(self) -> None:
        if self.quick:
            self.ks, self.ratios, self.lengths, self.repeats, self.decode_tokens = (1, 10), (5,), (256, 1024), 5, 16


def _median_times(fns: dict, repeats: int, setups: dict | None = None) -> dict[str, float]:
    """Median seconds of each named function, measured interleaved (one round runs every function once, in a
    rotating order) so that a slow spell of the machine falls on all of them alike."""
    setups = setups or {}
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:  # warm-up, not counted
        if n in setups:
            setups[n]()
        fns[n]()
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            if n in setups:
                setups[n]()
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def machine_info() -> dict:
    """CPU model, cores, torch version and threads, GPU name: what every report records."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "python": platform.python_version()}


def _full_kv_bytes(sac, tokens: int) -> int:
    cfg = sac.base_model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * tokens * sac.dtype.itemsize


def run_bench(cfg: BenchConfig, *, progress: bool = True) -> dict:
    from .. import KVStore, SACCompressor, SACConfig, SACModel
    from ..config import QA_TEMPLATE
    from ..models import load_base

    corpus = json.loads(resources.files("sac_rag").joinpath("data/demo_corpus.json").read_text(encoding="utf-8"))
    passages = [p["text"] for p in corpus["passages"]]
    question = QA_TEMPLATE.format(question="What is this passage about?")
    log = print if progress else (lambda *a, **k: None)
    results: dict = {"config": asdict(cfg), "machine": machine_info(), "ttft": [], "throughput": [], "decode": [],
                     "memory": [], "scaling": []}
    for ratio in cfg.ratios:
        model, tok = load_base(cfg.model, dtype=cfg.dtype)
        sac = SACModel(model, tok, SACConfig(ratio=ratio), source=cfg.model or "embedded:gemma-3-270m")
        results["model"], results["dtype"] = sac.source, str(sac.dtype)
        tmp = tempfile.mkdtemp(prefix="sac-bench-")
        mem = SACCompressor(sac, KVStore())
        disk = SACCompressor(sac, KVStore(directory=tmp))
        with torch.inference_mode():
            for k in cfg.ks:
                chosen = passages[:k]
                full_prompt = "".join(sac.config.template + p + "\n" for p in chosen).rstrip("\n") + question
                tokens = len(sac.tokenize(full_prompt))
                marked = mem.compress(chosen)
                prompt = "".join(m.marker for m in marked) + question
                dprompt = "".join(m.marker for m in disk.compress(chosen)) + question
                t = _median_times({
                    "full": lambda: sac.generate([full_prompt], max_new_tokens=1),
                    "memory": lambda: mem.generate(prompt, max_new_tokens=1),
                    "disk": lambda: disk.generate(dprompt, max_new_tokens=1),
                    "cold": lambda: sac.generate([*sac.compress_batch(chosen), question], max_new_tokens=1),
                }, cfg.repeats, setups={"disk": disk.store.clear_memory})
                full, warm, on_disk, cold = t["full"], t["memory"], t["disk"], t["cold"]
                row = {"ratio": ratio, "k": k, "prompt_tokens_full": tokens, "full_s": full, "sac_memory_s": warm,
                       "sac_disk_s": on_disk, "sac_cold_s": cold, "speedup_memory": full / warm, "speedup_disk": full / on_disk,
                       "cold_vs_full": cold / full}
                results["ttft"].append(row)
                log(f"[x{ratio}] k={k:2d} ({tokens} tokens): TTFT full {full:.3f} s | SAC memory {warm:.3f} s "
                    f"({full / warm:.1f}x) | disk {on_disk:.3f} s ({full / on_disk:.1f}x) | cold {cold:.3f} s ({cold / full:.2f}x full)")
                kvs = [mem.store.get(m.key) for m in marked]
                n_tok = sum(kv.num_tokens for kv in kvs)
                results["memory"].append({"ratio": ratio, "k": k, "sac_kv_bytes": sum(kv.nbytes for kv in kvs),
                                          "full_kv_bytes": _full_kv_bytes(sac, n_tok),
                                          "bytes_ratio": sum(kv.nbytes for kv in kvs) / _full_kv_bytes(sac, n_tok)})
            # compression throughput against a plain prefill of the same tokens
            batch = passages[:16]
            ids = [sac.tokenize(sac.config.template + p) for p in batch]
            n_tokens = sum(len(i) for i in ids)
            inner = sac.model.get_decoder()

            def prefill_all():  # what reading the same passages as text costs: the base model's prefill, cache kept
                for i in ids:
                    inner(input_ids=torch.tensor([[sac.bos_id, *i]], device=sac.device), use_cache=True)

            t = _median_times({"prefill": prefill_all, "batched": lambda: sac.compress_batch(batch, batch_size=8),
                               "single": lambda: [sac.compress(p) for p in batch]}, cfg.repeats)
            t_prefill, t_batched, t_single = t["prefill"], t["batched"], t["single"]
            results["throughput"].append({
                "ratio": ratio, "passages": len(batch), "tokens": n_tokens,
                "prefill_tokens_per_s": n_tokens / t_prefill,
                "batched_tokens_per_s": n_tokens / t_batched, "batched_passages_per_s": len(batch) / t_batched,
                "single_tokens_per_s": n_tokens / t_single, "single_passages_per_s": len(batch) / t_single,
                "batched_vs_prefill": t_prefill / t_batched, "single_vs_prefill": t_prefill / t_single,
            })
            log(f"[x{ratio}] compression: batched {n_tokens / t_batched:.0f} tok/s, one by one {n_tokens / t_single:.0f} tok/s, "
                f"plain prefill {n_tokens / t_prefill:.0f} tok/s")
            # decode speed after the prompt (k = 10 passages)
            chosen = passages[:10]
            full_prompt = "".join(sac.config.template + p + "\n" for p in chosen).rstrip("\n") + question
            prompt = "".join(m.marker for m in mem.compress(chosen)) + question
            n = cfg.decode_tokens

            def decode_rate(run) -> float:
                t = _median_times({"one": lambda: run(1), "n": lambda: run(n)}, cfg.repeats)
                t1, tn = t["one"], t["n"]
                return (n - 1) / max(1e-9, tn - t1)

            kw = dict(temperature=0.0)
            full_rate = decode_rate(lambda m: sac.generate([full_prompt], max_new_tokens=m, **kw))
            sac_rate = decode_rate(lambda m: mem.generate(prompt, max_new_tokens=m, **kw))
            results["decode"].append({"ratio": ratio, "k": 10, "full_tokens_per_s": full_rate, "sac_tokens_per_s": sac_rate,
                                      "speedup": sac_rate / full_rate})
            log(f"[x{ratio}] decode: SAC {sac_rate:.1f} tok/s, full {full_rate:.1f} tok/s")
            # scaling with passage length (one long passage made of consecutive paragraphs)
            text = " ".join(passages)
            all_ids = sac.tokenize(text)
            for length in cfg.lengths:
                piece = sac.tokenizer.decode(all_ids[:length])
                fp = sac.config.template + piece + question
                kvp = mem.compress([piece])
                sp = "".join(m.marker for m in kvp) + question
                t = _median_times({
                    "full_s": lambda: sac.generate([fp], max_new_tokens=1),
                    "sac_memory_s": lambda: mem.generate(sp, max_new_tokens=1),
                    "sac_cold_s": lambda: sac.generate([sac.compress(piece), question], max_new_tokens=1),
                }, cfg.repeats)
                results["scaling"].append({"ratio": ratio, "tokens": length, **t})
        stats = mem.store.stats()
        results.setdefault("store", []).append({"ratio": ratio, "hits": stats.hits, "misses": stats.misses})

    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _write(results, Path(cfg.out_dir))
    return results


def _plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for ratio in results["config"]["ratios"]:
        rows = [r for r in results["ttft"] if r["ratio"] == ratio]
        ks = [r["k"] for r in rows]
        if ratio == results["config"]["ratios"][0]:
            ax.plot(ks, [r["full_s"] for r in rows], "k-o", label="full context")
        ax.plot(ks, [r["sac_memory_s"] for r in rows], "-o", label=f"SAC x{ratio}, stored KV (memory)")
        ax.plot(ks, [r["sac_disk_s"] for r in rows], "--o", label=f"SAC x{ratio}, stored KV (disk)")
        ax.plot(ks, [r["sac_cold_s"] for r in rows], ":o", label=f"SAC x{ratio}, cold")
    ax.set_xlabel("retrieved passages k")
    ax.set_ylabel("time to first token (s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Time to first token against k")
    fig.tight_layout()
    fig.savefig(out / "bench_ttft_k.png", dpi=120)
    names.append("bench_ttft_k.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for ratio in results["config"]["ratios"]:
        rows = [r for r in results["scaling"] if r["ratio"] == ratio]
        xs = [r["tokens"] for r in rows]
        if ratio == results["config"]["ratios"][0]:
            ax.plot(xs, [r["full_s"] for r in rows], "k-o", label="full context")
        ax.plot(xs, [r["sac_memory_s"] for r in rows], "-o", label=f"SAC x{ratio}, stored KV")
        ax.plot(xs, [r["sac_cold_s"] for r in rows], ":o", label=f"SAC x{ratio}, cold")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("passage length (tokens)")
    ax.set_ylabel("time to first token (s)")
    ax.legend(fontsize=7)
    ax.set_title("Time to first token against passage length")
    fig.tight_layout()
    fig.savefig(out / "bench_ttft_length.png", dpi=120)
    names.append("bench_ttft_length.png")
    plt.close(fig)
    return names


def headline(results: dict, ratio: int = 5, k: int = 10) -> dict | None:
    """The figures the issue's bar names, at ``ratio`` and ``k``: stored-KV and cold TTFT against full context,
    compression throughput against a plain prefill (the better of batched and one by one), stored bytes."""
    row = next((r for r in results["ttft"] if r["ratio"] == ratio and r["k"] == k), None)
    tp = next((r for r in results["throughput"] if r["ratio"] == ratio), None)
    mem = [r for r in results["memory"] if r["ratio"] == ratio]
    if row is None or tp is None or not mem:
        return None
    return {"ratio": ratio, "k": k, "stored_speedup": row["speedup_memory"], "disk_speedup": row["speedup_disk"],
            "cold_vs_full": row["cold_vs_full"], "compression_vs_prefill": max(tp["batched_vs_prefill"], tp["single_vs_prefill"]),
            "bytes_ratio": max(r["bytes_ratio"] for r in mem)}


def _bar_lines(results: dict) -> list[str]:
    h = headline(results)
    if h is None:
        return []
    ok = lambda good: "meets" if good else "misses"  # noqa: E731
    return [
        f"## Against the bar (ratio {h['ratio']}, k = {h['k']})", "",
        "| figure | measured | bar | |", "|---|---|---|---|",
        f"| time to first token, stored KV in memory vs full context | {h['stored_speedup']:.1f}x faster | >= 5x | {ok(h['stored_speedup'] >= 5)} |",
        f"| time to first token, stored KV on disk vs full context | {h['disk_speedup']:.1f}x faster | >= 5x | {ok(h['disk_speedup'] >= 5)} |",
        f"| time to first token, cold (compress at query time) / full | {h['cold_vs_full']:.2f} | <= 1.3 | {ok(h['cold_vs_full'] <= 1.3)} |",
        f"| compression throughput / plain prefill | {h['compression_vs_prefill']:.2f} | >= 0.9 | {ok(h['compression_vs_prefill'] >= 0.9)} |",
        f"| stored bytes / full KV (largest over k) | {h['bytes_ratio']:.3f} | <= {1 / h['ratio']:.3f} | {ok(h['bytes_ratio'] <= 1 / h['ratio'] + 1e-9)} |",
        "",
    ]


def _write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tag = "benchmarks_quick" if results["config"]["quick"] else "benchmarks"
    (out / f"{tag}.json").write_text(json.dumps(results, indent=1))
    plots = _plots(results, out) if not results["config"]["quick"] else []
    m = results["machine"]
    lines = [
        f"# Benchmarks{' (quick)' if results['config']['quick'] else ''}",
        "",
        f"Written by `sac-rag bench{' --quick' if results['config']['quick'] else ''}` in one process. Machine: {m['cpu']}, "
        f"{m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads"
        f"{', GPU ' + m['cuda'] if m['cuda'] else ', no GPU'}; model {results.get('model')} in {results.get('dtype')}. "
        f"Medians of {results['config']['repeats']} repeats after a warm-up; ratios are against full context in the same run. "
        "Passages: the bundled demo corpus (SQuAD dev paragraphs, ~150 tokens each). Speed does not depend on whether "
        "the adapter is trained.",
        "",
        "What is timed: *full* is our decoder reading the passages as text (the base model's own prefill, BOS + "
        "template + passages + question) up to the first token; *SAC stored* reads each passage's stored anchor KV "
        "(from the in-memory store, or from the directory store after its memory cache was cleared, checksums "
        "verified); *SAC cold* compresses the passages at query time and then answers. *Plain prefill* is the base "
        "model's forward pass over the same passages with its KV cache kept, the work SAC compression replaces.",
        "",
        *_bar_lines(results),
        "## Time to first token",
        "",
        "| ratio | k | full-context tokens | full (s) | SAC stored, memory (s) | speedup | SAC stored, disk (s) | speedup | SAC cold (s) | cold / full |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["ttft"]:
        lines.append(f"| {r['ratio']} | {r['k']} | {r['prompt_tokens_full']} | {r['full_s']:.3f} | {r['sac_memory_s']:.3f} | "
                     f"{r['speedup_memory']:.1f}x | {r['sac_disk_s']:.3f} | {r['speedup_disk']:.1f}x | {r['sac_cold_s']:.3f} | "
                     f"{r['cold_vs_full']:.2f} |")
    lines += ["", "## Compression throughput", "",
              "| ratio | passages | tokens | batched tok/s | batched passages/s | one-by-one tok/s | plain prefill tok/s | batched / prefill | one-by-one / prefill |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results["throughput"]:
        lines.append(f"| {r['ratio']} | {r['passages']} | {r['tokens']} | {r['batched_tokens_per_s']:.0f} | "
                     f"{r['batched_passages_per_s']:.1f} | {r['single_tokens_per_s']:.0f} | {r['prefill_tokens_per_s']:.0f} | "
                     f"{r['batched_vs_prefill']:.2f} | {r['single_vs_prefill']:.2f} |")
    lines += ["", "## Decode", "", "| ratio | k | SAC tok/s | full tok/s | ratio |", "|---|---|---|---|---|"]
    for r in results["decode"]:
        lines.append(f"| {r['ratio']} | {r['k']} | {r['sac_tokens_per_s']:.1f} | {r['full_tokens_per_s']:.1f} | {r['speedup']:.2f} |")
    lines += ["", "## Memory", "", "| ratio | k | SAC KV bytes | full KV bytes | SAC / full |", "|---|---|---|---|---|"]
    for r in results["memory"]:
        lines.append(f"| {r['ratio']} | {r['k']} | {r['sac_kv_bytes']:,} | {r['full_kv_bytes']:,} | {r['bytes_ratio']:.3f} |")
    lines += ["", f"Peak RSS of the bench process: {results['peak_rss_mb']:.0f} MB.", "",
              "## Scaling with passage length", "", "| ratio | tokens | full (s) | SAC stored (s) | SAC cold (s) |", "|---|---|---|---|---|"]
    for r in results["scaling"]:
        lines.append(f"| {r['ratio']} | {r['tokens']} | {r['full_s']:.3f} | {r['sac_memory_s']:.3f} | {r['sac_cold_s']:.3f} |")
    for p in plots:
        lines += ["", f"![{p}]({p})"]
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n")
