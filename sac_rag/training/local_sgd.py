"""Local SGD: several training processes from one adapter, averaged every round.

A round starts ``workers`` runs of :func:`~sac_rag.training.trainer.train` side by side, each in its own process
with its own seed (so its own items) and a fresh optimizer, all from the same adapter; when they end, their
adapters are averaged (:func:`~sac_rag.training.average.average_adapters`) and the average starts the next round.
On a CPU with few cores, ``workers`` one-thread runs use the cores better than one run on all of them, and the
average of runs from one start beats each run (session 14, ``docs/adapters.md``); averaging every round keeps the
workers close, so their updates keep adding up.

The rounds share one schedule: ``steps``, ``decay_steps`` and ``time_budget_s`` of the config describe the whole
run, and round ``r`` of ``R`` covers the window ``((r-1)/R, r/R)`` of it (its warmup restarts with its optimizer).
On disk: ``out_dir/round-<r>/worker-<w>/`` (each a training run directory) and ``out_dir/round-<r>/average/``, the
adapter that round produced; the last round's average is the result. Worker ``w`` of round ``r`` (both from 1)
uses ``seed + 100 r + w``. Run again, it resumes: a round whose average exists is skipped, a finished worker is not
run again, an unfinished one resumes from its checkpoint (with its window's time budget counted afresh).

This module knows processes, rounds and directories; the loop is :mod:`.trainer`'s, the averaging
:mod:`.average`'s.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SACError
from .average import average_adapters
from .trainer import TrainConfig, prior_training, train

__all__ = ["LocalSGDError", "train_local_sgd", "worker_config"]


class LocalSGDError(SACError):
    """A worker process of a local-SGD round failed; its run directory and log tell why."""


def _worker(cfg: TrainConfig) -> None:  # runs in a child process
    train(cfg, progress=False)


def _finished(run: Path) -> bool:
    state = run / "latest" / "state.json"
    return state.exists() and bool(json.loads(state.read_text()).get("finished"))


def _last_log(run: Path) -> dict[str, Any] | None:
    log = run / "log.jsonl"
    if not log.exists():
        return None
    lines = log.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1]) if lines else None


def round_window(rnd: int, rounds: int) -> tuple[float, float]:
    """The share of the whole schedule that round ``rnd`` (from 1) of ``rounds`` covers."""
    return (rnd - 1) / rounds, rnd / rounds


def worker_config(cfg: TrainConfig, start: str | None, rnd: int, rounds: int, w: int, workers: int,
                  out: Path) -> TrainConfig:
    """The config of worker ``w`` of ``workers`` in round ``rnd`` of ``rounds`` (both from 1); without
    ``cfg.threads`` the workers share the CPU's cores."""
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // workers)
    return replace(cfg, init_adapter=start, seed=cfg.seed + 100 * rnd + w, out_dir=str(out),
                   schedule_window=round_window(rnd, rounds), threads=threads, resume=True)


def train_local_sgd(cfg: TrainConfig, *, workers: int = 2, rounds: int = 1, progress: bool = True,
                    poll_s: float = 5.0) -> Path:
    """Train ``workers`` runs side by side for ``rounds`` rounds, averaging them after each; returns the last
    round's averaged adapter. ``cfg`` is the whole run's config (its ``init_adapter`` starts round 1; ``threads`` is
    each worker's, by default the cores shared out). ``cfg.resume=False`` is refused: rounds are resumed by design
    (delete the run directory to start over)."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 2:
        raise ConfigError(f"local SGD needs workers >= 2 (one worker is plain training), got {workers!r}")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"rounds must be an int >= 1, got {rounds!r}")
    if tuple(cfg.schedule_window) != (0.0, 1.0):
        raise ConfigError("local SGD sets each round's schedule window; leave schedule_window at (0, 1)")
    if cfg.joint_ratios:
        raise ConfigError("local SGD averages one adapter per worker; joint_ratios is not supported")
    if not cfg.resume:
        raise ConfigError("local SGD always resumes its rounds; delete the run directory to start over")
    out = Path(cfg.out_dir)
    start = cfg.init_adapter
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch thread pools
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rounds, desc=f"local SGD, {workers} workers", unit="round")
    for rnd in range(1, rounds + 1):
        rdir = out / f"round-{rnd}"
        runs = [rdir / f"worker-{w}" for w in range(1, workers + 1)]
        avg_dir = rdir / "average"
        if not (avg_dir / "sac_adapter.json").exists():
            procs = []
            for w, run in enumerate(runs, start=1):
                if not _finished(run):
                    p = ctx.Process(target=_worker, args=(worker_config(cfg, start, rnd, rounds, w, workers, run),),
                                    name=f"sac-rag round {rnd} worker {w}")
                    p.start()
                    procs.append((w, p))
            while any(p.is_alive() for _, p in procs):
                time.sleep(poll_s)
                if bar is not None:
                    logs = [_last_log(run) for run in runs]
                    seen = [r for r in logs if r]
                    if seen:
                        bar.set_postfix(round=rnd, items=sum(r["items"] for r in seen),
                                        loss=f"{sum(r['loss'] for r in seen) / len(seen):.3f}")
            for _, p in procs:
                p.join()
            failed = [w for w, p in procs if p.exitcode != 0]
            if failed:
                raise LocalSGDError(f"round {rnd}: worker(s) {failed} failed (exit codes "
                                    f"{[p.exitcode for w, p in procs if w in failed]}); see {rdir}")
            before = prior_training(start, cfg.stage, cfg.ratio) if start else {"items": 0, "tokens": 0, "elapsed_s": 0.0}
            tmp = rdir / ".average.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            average_adapters([run / "latest" / "adapter" for run in runs], tmp, info={
                "before": before, "local_sgd": {"round": rnd, "rounds": rounds, "workers": workers,
                                                "window": list(round_window(rnd, rounds))}})
            if avg_dir.exists():  # an average interrupted before its metadata was written
                shutil.rmtree(avg_dir)
            os.replace(tmp, avg_dir)
        start = str(avg_dir)
        if bar is not None:
            info = json.loads((avg_dir / "sac_adapter.json").read_text())["info"]
            bar.update(1)
            bar.set_postfix(round=rnd, items=info.get("items", 0), cut=f"{100 * info.get('mean_truncation', 0):.2f}%")
    if bar is not None:
        bar.close()
    return Path(start)

