"""``sac-rag report``: regenerate ``docs/results.md`` and its plots from eval JSON files and training logs.

Reads every ``*.json`` written by ``sac-rag eval --json`` in a directory, groups
them by data set, setting (gold passage alone or among distractors) and shot
count, and writes one table per group with the ratio each method really
reached. Plots: F1 against reached ratio per method, and training loss
curves from ``log.jsonl`` files. Numbers come only from those files.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from pathlib import Path

from .qa import recorded_dtype

__all__ = ["write_report"]


def _load(results_dir: Path) -> list[dict]:
    out = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if "summary" in data and "config" in data:
            data["_file"] = path.name
            out.append(data)
    return out


def _other_dtype(r: dict) -> str | None:
    """The dtype a result ran in when it is not bf16 (the bar's), which its label then names; else None."""
    dtype = recorded_dtype(r["summary"])
    return None if dtype == "bfloat16" else dtype


def _decoding(cfg: dict) -> str:
    """How a run decoded, as a label suffix: free (nothing), grounded, or grounded in a picked passage."""
    if not cfg.get("grounded"):
        return ""
    return ", grounded" + (" in a picked passage" if cfg.get("pick_passage") else "")


def _method_name(r: dict, dtype: bool = True) -> str:
    cfg = r["config"]
    name = cfg["method"]
    if name in ("sac", "truncate", "llmlingua"):
        name += f" {cfg['ratio']}x"
    if name.startswith("llmlingua") and cfg.get("llmlingua_segment", 200) != 200:
        name += f" (segments of {cfg['llmlingua_segment']})"
    if name.startswith("sac"):
        info = r["summary"].get("adapter_info") or {}
        name += f" ({info.get('stage', 'untrained')} {info.get('step', '')})".replace(" )", ")")
    name += _decoding(cfg)
    if dtype and _other_dtype(r):
        name += f" [{_other_dtype(r)}]"
    return name + f", {cfg['shots']}-shot"


@functools.cache
def _shipped_fingerprints() -> dict[str, int]:
    """The fingerprint of each adapter shipped in the package -> its ratio (read from the files, no model loaded)."""
    from ..adapter import read_adapter
    from ..sac_model import SHIPPED_DIR

    out = {}
    for meta in sorted(SHIPPED_DIR.glob("*/sac_adapter.json")):
        files = read_adapter(meta.parent)
        out[files.fingerprint] = files.config.ratio
    return out


def _adapter_argument(r: dict) -> str | None:
    """What ``--adapter`` a result's command needs: none for the package's adapter (the default at that ratio), nor
    for a training run's copy of it that a result was made with before it shipped (the fingerprint says they are
    the same weights); else the path it ran with (``~`` for the home directory)."""
    cfg, adapter = r["config"], r["summary"].get("adapter")
    if cfg["method"] not in ("sac", "full-ft") or not adapter or adapter == "untrained":
        return None
    if "sac_rag/adapters/" in str(adapter):
        return None
    if cfg["method"] == "sac" and _shipped_fingerprints().get(r["summary"].get("fingerprint")) == cfg["ratio"]:
        return None
    home = str(Path.home())
    return "~" + adapter[len(home):] if adapter.startswith(home + "/") else adapter


def command(r: dict) -> str:
    """The ``sac-rag eval`` command that reproduces a result (data under ``$DATA``, the shared data folder)."""
    cfg = r["config"]
    data = str(cfg["data"])
    data = "$DATA/" + data.split("/data/", 1)[1] if "/data/" in data else data
    parts = ["sac-rag eval", f"--data {data}"]
    if cfg.get("fmt"):
        parts.append(f"--format {cfg['fmt']}")
    if cfg.get("parity"):
        parts.append(f"--parity {cfg['parity']}")
    parts.append(f"--method {cfg['method']}")
    if cfg["method"] in ("sac", "truncate", "llmlingua", "full-ft") or cfg.get("ratio") not in (None, 5):
        parts.append(f"--ratio {cfg['ratio']}")
    if cfg.get("passages", 1) != 1:
        parts.append(f"--passages {cfg['passages']}")
    if cfg.get("shots"):
        parts.append(f"--shots {cfg['shots']}")
    if cfg["method"] == "llmlingua" and cfg.get("llmlingua_segment", 200) != 200:
        parts.append(f"--llmlingua-segment {cfg['llmlingua_segment']}")
    adapter = _adapter_argument(r)
    if adapter:
        parts.append(f"--adapter {adapter}")
    if cfg.get("limit"):
        parts.append(f"--limit {cfg['limit']}")
    if cfg.get("offset"):
        parts.append(f"--offset {cfg['offset']}")
    if cfg.get("seed"):
        parts.append(f"--seed {cfg['seed']}")
    if cfg.get("distractors", "random") != "random":
        parts.append(f"--distractors {cfg['distractors']}")
    if cfg.get("order", "random") != "random":
        parts.append(f"--order {cfg['order']}")
    if cfg.get("pick_passage"):
        parts.append("--pick-passage")
    elif cfg.get("grounded"):
        parts.append("--grounded")
    parts.append(f"--dtype {recorded_dtype(r['summary'])}")  # auto differs by CPU
    return " ".join(parts)


def _finish(fig, ax, path: Path, *, xlabel: str, ylabel: str, title: str, legend_size: int = 7) -> str:
    """Label, lay out, save and close a figure; returns the file name."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def _log_rows(log: Path) -> dict[int, dict]:
    """A training log's records by step (a step logged twice by a resumed run: the last one; broken lines skipped)."""
    rows = {}
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[rec["step"]] = rec
    return rows


def log_ratios(log: Path | dict[int, dict]) -> list[str]:
    """The ratios a jointly trained run's log (a path, or its rows) reports apart (``loss_by_ratio``), in order; []
    for a one-ratio run."""
    rows = _log_rows(log) if isinstance(log, Path) else log
    return sorted({r for rec in rows.values() for r in rec.get("loss_by_ratio", {})}, key=int)


def loss_series(log: Path | dict[int, dict], ratio: str | None = None) -> tuple[list[int], list[float]]:
    """A training log's curve (a path, or its rows): the run's items seen and the answer tokens' cross-entropy at
    each step. A distilled run's ``loss`` mixes in its KL term, so its ``ce`` is taken: the same quantity as a plain
    run's ``loss``. With ``ratio``, a jointly trained run's loss at that ratio alone (steps with no item at it are
    left out)."""
    rows = _log_rows(log) if isinstance(log, Path) else log
    steps = sorted(rows)
    if ratio is not None:
        steps = [s for s in steps if ratio in rows[s].get("loss_by_ratio", {})]
        return [rows[s]["items"] for s in steps], [rows[s]["loss_by_ratio"][ratio] for s in steps]
    return [rows[s]["items"] for s in steps], [rows[s].get("ce", rows[s]["loss"]) for s in steps]


def _loss_curves(logs: list[Path], out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    window = 20
    for log in logs:
        name = log.parent.name if log.name == "log.jsonl" else log.stem
        # a run trained on several ratios: a line per ratio (its items count all ratios' items)
        rows = _log_rows(log)
        for ratio in log_ratios(rows) or [None]:
            items, loss = loss_series(rows, ratio)
            if not items:
                continue
            smooth = [sum(loss[max(0, i - window + 1): i + 1]) / len(loss[max(0, i - window + 1): i + 1]) for i in range(len(loss))]
            label = name + (f", its x{ratio} items" if ratio else "")
            ax.plot(items, smooth, label=f"{label} (moving mean of {window} steps)")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    return _finish(fig, ax, out / "training_loss.png", xlabel="training examples",
                   ylabel="cross-entropy (answer tokens)", title="Training loss")


def _largest(groups: dict[tuple, list[dict]]) -> dict[tuple, list[dict]]:
    """For each (data, parity, passages), the table with the most questions."""
    best: dict[tuple, tuple] = {}
    for key in groups:
        data, parity, passages, _ = key
        k = (data, parity, passages)
        if k not in best or groups[key][0]["summary"]["n"] > groups[best[k]][0]["summary"]["n"]:
            best[k] = key
    return {k: groups[key] for k, key in sorted(best.items(), key=lambda kv: str(kv[0]))}


def _title(data: str, parity: str | None, passages: int) -> str:
    setting = "gold passage only" if passages == 1 else f"gold among {passages - 1} distractors"
    return f"{data}{' (' + parity + ' items)' if parity else ''}, {setting}"


def _overview(groups: dict[tuple, list[dict]], largest: dict[tuple, list[dict]]) -> list[str]:
    """One row per method, one column per data set and setting (its largest table): F1 and the reached ratio. A
    method missing from a column's largest table shows its run on the largest table of that column that has it,
    with the question count. A method run in another dtype than bf16 (the bar's) shares its row, the cell saying
    the dtype; a table holding it in two dtypes shows both, bf16 first."""
    if len(largest) < 2:
        return []
    cols = list(largest)
    cells: dict[str, dict[tuple, list[str]]] = defaultdict(lambda: defaultdict(list))
    first: dict[str, float] = {}  # a row's F1 in its first column: the rows' order
    for col in cols:
        n_col = largest[col][0]["summary"]["n"]
        tables = sorted((rows for key, rows in groups.items() if key[:3] == col), key=lambda rows: -rows[0]["summary"]["n"])
        taken: set[str] = set()
        for rows in tables:
            here = set()
            for r in sorted(rows, key=lambda r: _other_dtype(r) is not None):
                s, name = r["summary"], _method_name(r, dtype=False)
                if name in taken:
                    continue
                here.add(name)
                notes = [n for n in (f"{s['reached_ratio']:.1f}x" if s.get("reached_ratio") else None, _other_dtype(r),
                                     f"{s['n']} q" if s["n"] != n_col else None) if n]
                cells[name][col].append(f"{s['f1']:.1f}" + (f" ({', '.join(notes)})" if notes else ""))
                first.setdefault(name, s["f1"])
            taken |= here
    head = [f"{_title(*col)}, {largest[col][0]['summary']['n']} q" for col in cols]
    lines = ["## Overview", "", "F1 (and the ratio reached) of every method on the largest table of each data set and "
             "setting below (a method not run there: its largest run in that setting, with its number of questions); a "
             "blank: not run in that setting; float32: evaluated in float32 (each eval file records its CPU), the "
             "others in bf16.", "", "| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(cols)]
    for name in sorted(cells, key=lambda n: -first[n]):
        lines.append(f"| {name} | " + " | ".join(" / ".join(cells[name].get(col, [])) for col in cols) + " |")
    return lines + [""]


def _f1_plot(largest: dict[tuple, list[dict]], out: Path) -> str | None:
    """F1 against reached ratio, one panel per data set (gold passage only, its largest table), a line per method."""
    panels = {k: rows for k, rows in largest.items() if k[2] == 1}
    panels = {k: rows for k, rows in panels.items() if any(r["summary"].get("reached_ratio") for r in rows)}
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = lambda r: f"{r['config']['method']}{_decoding(r['config'])}, {r['config']['shots']}-shot"  # noqa: E731
    methods = sorted({label(r) for rows in panels.values() for r in rows if r["summary"].get("reached_ratio")})
    color = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}  # a method keeps its colour in every panel
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, ((data, parity, passages), rows) in zip(axes[0], panels.items()):
        points = defaultdict(list)
        for r in rows:
            ratio = r["summary"].get("reached_ratio")
            if ratio:
                points[label(r)].append((ratio, r["summary"]["f1"]))
        for method, pts in sorted(points.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method, color=color[method])
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio reached (base-model tokens)")
        ax.set_ylabel("F1")
        ax.set_title(f"{_title(data, parity, passages)}, {rows[0]['summary']['n']} q", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("F1 against the ratio each method reached")
    fig.tight_layout()
    fig.savefig(out / "f1_vs_ratio.png", dpi=120)
    plt.close(fig)
    return "f1_vs_ratio.png"


def _curve(curve_dir: Path, out: Path) -> list[str]:
    """F1 against training examples on the curve slice: one line per (method, ratio, stage) series, the text-reading
    baselines evaluated on the same slice as horizontal lines."""
    runs = _load(curve_dir)
    if not runs:
        return []
    series: dict[str, list[tuple[int, float, dict]]] = defaultdict(list)
    references: list[tuple[str, float]] = []
    for r in runs:
        info = r["summary"].get("adapter_info") or {}
        cfg = r["config"]
        if cfg["method"] not in ("sac", "full-ft") or not info.get("trained"):
            references.append((_method_name(r), r["summary"]["f1"]))
            continue
        stage = info.get("stage", "?")
        name = f"{cfg['method']} {info.get('ratio', cfg['ratio'])}x, {stage} stage" if cfg["method"] == "sac" else f"full-ft, {stage} stage"
        before = info.get("before") or {}
        if info.get("recipe"):  # a continued run: its own recipe, drawn from where its init adapter stood
            # one series per recipe whatever its schedule (early records put the decay into the recipe)
            name += f" ({re.sub(r', decay over last .*$', '', info['recipe'])})"
        elif info.get("init"):
            name += f" (from {info['init']})"
        if _other_dtype(r):  # evaluated in another dtype: its own line
            name += f" [{_other_dtype(r)}]"
        hours = (before.get("elapsed_s", 0) + info.get("elapsed_s", 0)) / 3600
        series[name].append((int(before.get("items", 0) + info.get("items", 0)), r["summary"]["f1"], r, hours))
    first = runs[0]["config"]
    where = (f"{Path(first['data']).name}, questions {first.get('offset', 0)}..{first.get('offset', 0) + runs[0]['summary']['n'] - 1} "
             f"of the seed-{first.get('seed', 0)} shuffle (disjoint from the results tables), gold passage only")
    lines = ["## Learning curves", "", f"F1 against training examples, on {where}. "
             "An example is one item of the stream: passages compressed once, with the questions its recipe allows (QA) "
             "or one continuation (LM). A run continued from another counts the examples and hours of its init adapter "
             "in the same stage. Hours: wall time of training on the machine that ran it (2 CPU cores, shared with evals at "
             "times; docs/TRAINING.md says which machine, and its speed, for each run).", "",
             "| series | examples | training hours | step | EM | F1 | file |", "|---|---|---|---|---|---|---|"]
    for name, pts in sorted(series.items()):
        for items, f1, r, hours in sorted(pts, key=lambda p: p[0]):
            info = r["summary"]["adapter_info"]
            lines.append(f"| {name} | {items:,} | {hours:.2f} | {info.get('step', '')} | {r['summary']['em']:.1f} | "
                         f"{f1:.1f} | {r['_file']} |")
    for name, f1 in references:
        lines.append(f"| {name} (no training) | | | | | {f1:.1f} | |")
    lines.append("")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    for x, fname, xlabel in ((0, "f1_vs_examples.png", "training examples in the stage"),
                             (3, "f1_vs_hours.png", "training hours in the stage (this CPU)")):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, pts in sorted(series.items()):
            pts.sort(key=lambda p: p[0])
            ax.plot([p[x] for p in pts], [p[1] for p in pts], "o-", label=name)
        for name, f1 in references:
            ax.axhline(f1, linestyle="--", color="gray", linewidth=1)
            ax.annotate(name, (0, f1), textcoords="offset points", xytext=(2, 3), fontsize=7, color="gray")
        plots.append(_finish(fig, ax, out / fname, xlabel=xlabel, ylabel="F1", title=f"F1 against {xlabel.split(' in ')[0]}"))
    return lines + [f"![{p}]({p})" for p in plots] + [""]


def _history(results_dir: Path, largest: dict[tuple, list[dict]], out: Path) -> list[str]:
    """Each shipped 5x SAC adapter's F1 on the largest tables, against the QA items it had been trained on: the tables'
    own SAC runs and those kept in ``previous-*`` folders when an adapter was replaced (the same questions, passage
    setting and command), float32 runs only, with ``full-ft`` decoded the same way and 95% of it as lines."""
    runs = [r for d in sorted(results_dir.glob("previous-*")) if d.is_dir() for r in _load(d)]
    runs += [r for rows in largest.values() for r in rows]
    keys = {key: rows[0]["summary"]["n"] for key, rows in largest.items()}
    panels: dict[tuple, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))  # by decoding
    rivals: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in runs:
        cfg, s = r["config"], r["summary"]
        key = (Path(cfg["data"]).name, cfg.get("parity"), cfg["passages"])
        if (key not in keys or s["n"] != keys[key] or cfg.get("shots", 0) or cfg.get("offset", 0)
                or cfg.get("order", "random") != "random" or cfg.get("distractors", "random") != "random"):
            continue
        decoding = "grounded" if cfg.get("grounded") else "free"
        if cfg["method"] == "full-ft":
            if recorded_dtype(s) == "float32" or decoding not in rivals[key]:
                rivals[key][decoding] = s["f1"]
            continue
        info = s.get("adapter_info") or {}
        if cfg["method"] != "sac" or cfg["ratio"] != 5 or not info.get("trained") or recorded_dtype(s) != "float32":
            continue
        items = int((info.get("before") or {}).get("items", 0) + info.get("items", 0))
        series = panels[key][decoding]
        if all(p[0] != items for p in series):
            series.append((items, s["f1"]))
    panels = {k: v for k, v in panels.items() if any(len(pts) > 1 for pts in v.values())}
    if not panels:
        return []
    order = sorted(panels, key=str)
    columns = [(key, decoding) for key in order for decoding in sorted(panels[key])]
    lines = ["## The shipped 5x adapters over their training", "",
             "F1 of each 5x adapter that shipped, on the largest tables' questions, against the QA items it had been "
             "trained on (its own runs and those of the adapters it continued; averaged runs count every worker's items), "
             "and in brackets its share of `full-ft` decoded the same way (free or grounded): the SAC runs of these tables "
             "and those kept in `previous-*` folders when an adapter was replaced, float32 runs only; a blank: not run. "
             "Among distractors the passages are in a random order, the tables' setting; the adapters since session 25 "
             "were trained for the integrations' order (the best-ranked passage last), where they score higher "
             "(`docs/ordering.md`). "
             "In the plot, dashed: `full-ft`; dotted: 95% of it, the target.", "",
             "| QA items | " + " | ".join(f"{_title(*key)}, {decoding}" for key, decoding in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for items in sorted({p[0] for series in panels.values() for pts in series.values() for p in pts}):
        cells = []
        for key, decoding in columns:
            f1 = next((p[1] for p in panels[key][decoding] if p[0] == items), None)
            rival = rivals[key].get(decoding)
            cells.append("" if f1 is None else f"{f1:.1f}" + (f" ({100 * f1 / rival:.0f}%)" if rival else ""))
        lines.append(f"| {items:,} | " + " | ".join(cells) + " |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), sharex=True, sharey=True, squeeze=False)
    for ax, key in zip(axes[0], order):
        for i, (decoding, pts) in enumerate(sorted(panels[key].items())):
            pts.sort()
            color = f"C{i}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"sac 5x, {decoding}", markersize=4)
            rival = rivals[key].get(decoding)
            if rival is not None:
                ax.axhline(rival, linestyle="--", color=color, linewidth=1)
                ax.axhline(0.95 * rival, linestyle=":", color=color, linewidth=1)
        ax.set_title(_title(*key).replace(", ", ",\n", 1), fontsize=8)
        ax.set_xlabel("QA items trained")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
    axes[0][0].set_ylabel("F1")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "f1_history.png", dpi=120)
    plt.close(fig)
    return lines + ["", "![f1_history.png](f1_history.png)", ""]


def _ids(r: dict) -> list:
    return [rec.get("id") for rec in r.get("records", [])]


def _share_closed_book(groups: dict[tuple, list[dict]]) -> None:
    """A closed-book run reads no passage, so the setting (gold passage alone or among distractors) does not
    change its prompts: its row also belongs in every other setting's table of the same data and questions. It
    is added there (marked) when that table has no closed-book row of its own and its questions are the same,
    in the same order (checked by id)."""
    for (data, parity, passages, limit), rows in list(groups.items()):
        for r in [r for r in rows if r["config"]["method"] == "closed-book" and not r.get("_shared")]:
            for key, others in groups.items():
                if key[:2] != (data, parity) or key[3] != limit or key[2] == passages or not others:
                    continue
                if any(o["config"]["method"] == "closed-book" and o["config"]["shots"] == r["config"]["shots"] for o in others):
                    continue
                if _ids(r) and _ids(r) == _ids(others[0]):
                    others.append({**r, "_shared": True})


def write_report(results_dir: str | Path, out_dir: str | Path = "docs", logs: list[str | Path] = (),
                 curve_dir: str | Path | None = None) -> Path:
    """Write ``results.md`` (tables per data set and setting, plots) into ``out_dir``; ``curve_dir`` holds evals
    of training checkpoints on a held-out slice, drawn as F1-against-examples curves."""
    results_dir, out = Path(results_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = _load(results_dir)
    # the tables compare methods on the same passages in a random order; runs in another passage setting (the
    # relevance order, retrieved distractors) are named, not mixed into them
    elsewhere = [r for r in results if r["config"].get("order", "random") != "random"
                 or r["config"].get("distractors", "random") != "random"]
    results = [r for r in results if all(r is not e for e in elsewhere)]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        cfg = r["config"]
        groups[(Path(cfg["data"]).name, cfg.get("parity"), cfg["passages"], cfg.get("limit"))].append(r)
    _share_closed_book(groups)
    lines = ["# Results", "", f"Generated by `sac-rag report` from {len(results)} eval files in `{results_dir}`. "
             "EM/F1: SQuAD-normalized, max over gold answers; ROUGE-1 and raw EM: against the first gold answer (the "
             "paper's metrics). Reached ratio: context tokens / tokens the method read (base-model tokens). s/question: "
             "wall time per question in that run, which includes compression for SAC; runs differ in threads and "
             "machine load, so compare speed in `docs/benchmarks.md`, not here.", "",
             "Regenerate this page: `" + " ".join(["sac-rag report", f"--results {results_dir}",
                                                   *(f"--log {p}" for p in logs), f"--out {out}"]) + "`", ""]
    if elsewhere:
        lines += ["Not in these tables, run in another passage setting (relevance order or retrieved distractors): "
                  + ", ".join(sorted(r["_file"] for r in elsewhere)) + ".", ""]
    largest = _largest(groups)
    lines += _overview(groups, largest)
    for (data, parity, passages, limit), rows in sorted(groups.items(), key=lambda kv: str(kv[0])):
        lines += [f"## {_title(data, parity, passages)}, {rows[0]['summary']['n']} questions", "",
                  "| method | EM | F1 | ROUGE-1 | raw EM | reached ratio | s/question | file |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: -r["summary"]["f1"]):
            s = r["summary"]
            ratio = f"{s['reached_ratio']:.2f}x" if s.get("reached_ratio") else "no context"
            lines.append(f"| {_method_name(r)}{' (reads no passage: the gold-passage run)' if r.get('_shared') else ''} | {s['em']:.1f} | {s['f1']:.1f} | {s['rouge1']:.1f} | {s['raw_em']:.1f} | "
                         f"{ratio} | {s['seconds_per_q']:.2f} | {r['_file']} |")
        lines += ["", "Commands (`--limit 20` for a quick check; an `--adapter` outside the package is a training run's "
                  "checkpoint, made by the `sac-rag train` command for it in `docs/TRAINING.md`):", "", "```bash"]
        lines += [f"{command(r)} --json {r['_file']}" for r in sorted(rows, key=lambda r: -r["summary"]["f1"])]
        lines += ["```", ""]
        reused = [f"{r['_file']} ({r['summary']['reused']['n']} from {r['summary']['reused']['from']})"
                  for r in rows if r["summary"].get("reused")]
        if reused:
            lines += ["Answers taken from an earlier, shorter run of the same command (`sac-rag eval --reuse`; the first "
                      "questions of a longer run are the same questions, decoded greedily): " + ", ".join(reused) + ".", ""]
    lines += _history(results_dir, largest, out)
    if curve_dir is not None and Path(curve_dir).is_dir():
        lines += _curve(Path(curve_dir), out)
    for plot in (_f1_plot(largest, out), _loss_curves([Path(p) for p in logs], out)):
        if plot:
            lines += [f"![{plot}]({plot})", ""]
    path = out / "results.md"
    path.write_text("\n".join(lines))
    return path
