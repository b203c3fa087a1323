"""Local SGD on a tiny saved model: schedule windows, rounds of worker processes, their averages, resume, errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import tiny_train_config
from sac_rag import ConfigError
from sac_rag.cli import build_parser, main
from sac_rag.training import LocalSGDError, TrainConfig, train, train_local_sgd
from sac_rag.training.trainer import lr_scale, schedule_progress

pytestmark = pytest.mark.filterwarnings("ignore:SACModel. no trained adapter:UserWarning")


def config(train_base: str, train_data: str, out, **kw) -> TrainConfig:
    return tiny_train_config(train_base, train_data, out, **{"steps": 4, "lora_alpha": 8, "threads": 1, **kw})


def state(run) -> dict:
    return json.loads((run / "latest" / "state.json").read_text())


def test_schedule_window_shifts_the_schedule(tmp_path):
    cfg = TrainConfig(stage="qa", qa_data=("x",), steps=100, warmup=1, decay_steps=50, time_budget_s=60,
                      schedule_window=(0.5, 1.0), out_dir=str(tmp_path))
    # the window's first step stands at half the schedule, where the decay starts
    assert schedule_progress(cfg, 0) == 0.5 and lr_scale(cfg, 0) == 1.0
    assert lr_scale(cfg, 25) == pytest.approx(0.5) and schedule_progress(cfg, 25) == pytest.approx(0.75)
    assert lr_scale(cfg, 0, spent=0.25) == pytest.approx(0.5)  # a quarter of the whole budget spent in this window
    first = TrainConfig(stage="qa", qa_data=("x",), steps=100, warmup=10, decay_steps=50, schedule_window=(0.0, 0.5),
                        out_dir=str(tmp_path))
    assert lr_scale(first, 0) == pytest.approx(0.1) and lr_scale(first, 40) == 1.0  # warmup, then flat
    for bad in [(0.5, 0.5), (-0.1, 0.5), (0.2, 1.5), (0.3,)]:
        with pytest.raises(ConfigError, match="schedule_window"):
            TrainConfig(stage="qa", qa_data=("x",), schedule_window=bad, out_dir=str(tmp_path))


def test_a_run_covers_its_window_and_says_it_finished(train_base, train_data, tmp_path):
    out = tmp_path / "run"
    train(config(train_base, train_data, out, steps=6, schedule_window=(0.5, 1.0)), progress=False)
    st = state(out)
    assert st["step"] == 3 and st["finished"] is True
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]


def test_rounds_of_workers_are_averaged_and_resume(train_base, train_data, tmp_path):
    out = tmp_path / "lsgd"
    cfg = config(train_base, train_data, out, steps=4, seed=7)
    final = train_local_sgd(cfg, workers=2, rounds=2, progress=False, poll_s=0.05)
    assert final == out / "round-2" / "average"
    for rnd in (1, 2):
        runs = [out / f"round-{rnd}" / f"worker-{w}" for w in (1, 2)]
        for w, run in enumerate(runs, start=1):
            st, tc = state(run), json.loads((run / "train_config.json").read_text())
            assert st["finished"] is True and st["step"] == 2  # half of the 4 steps per round
            assert tc["seed"] == 7 + 100 * rnd + w and tc["schedule_window"] == [(rnd - 1) / 2, rnd / 2]
            # round 2 starts from round 1's average, round 1 from the config's (here: none)
            assert tc["init_adapter"] == (str(out / "round-1" / "average") if rnd == 2 else None)
        # the average's embeddings are the workers' mean
        avg = load_file(out / f"round-{rnd}" / "average" / "sac_embeddings.safetensors")
        parts = [load_file(run / "latest" / "adapter" / "sac_embeddings.safetensors") for run in runs]
        for name, t in avg.items():
            assert torch.allclose(t, (parts[0][name].double() + parts[1][name].double()).float() / 2, atol=1e-6)
        assert not torch.equal(parts[0]["anchor"], parts[1]["anchor"])  # the workers saw different items
        info = json.loads((out / f"round-{rnd}" / "average" / "sac_adapter.json").read_text())["info"]
        assert info["local_sgd"] == {"round": rnd, "rounds": 2, "workers": 2, "window": [(rnd - 1) / 2, rnd / 2]}
        assert info["items"] == 4 and info["before"]["items"] == (4 if rnd == 2 else 0)

    # run again: every round is done, nothing is trained or rewritten
    stamp = (final / "sac_adapter.json").stat().st_mtime_ns
    logs = {p: p.read_text() for p in out.glob("round-*/worker-*/log.jsonl")}
    assert train_local_sgd(cfg, workers=2, rounds=2, progress=False, poll_s=0.05) == final
    assert (final / "sac_adapter.json").stat().st_mtime_ns == stamp
    assert {p: p.read_text() for p in out.glob("round-*/worker-*/log.jsonl")} == logs


def test_a_failing_worker_is_a_typed_error(train_base, tmp_path):
    cfg = config(train_base, str(tmp_path / "missing.json"), tmp_path / "lsgd")
    with pytest.raises(LocalSGDError, match="round 1: worker"):
        train_local_sgd(cfg, workers=2, rounds=1, progress=False, poll_s=0.05)
    assert not (tmp_path / "lsgd" / "round-1" / "average").exists()


def test_local_sgd_settings_are_checked(train_base, train_data, tmp_path):
    cfg = config(train_base, train_data, tmp_path / "x")
    for kw, match in [({"workers": 1}, "workers >= 2"), ({"workers": 2, "rounds": 0}, "rounds")]:
        with pytest.raises(ConfigError, match=match):
            train_local_sgd(cfg, progress=False, **kw)
    with pytest.raises(ConfigError, match="resumes"):
        train_local_sgd(config(train_base, train_data, tmp_path / "x", resume=False), progress=False)
    with pytest.raises(ConfigError, match="schedule window"):
        train_local_sgd(config(train_base, train_data, tmp_path / "x", schedule_window=(0.0, 0.5)), progress=False)
    args = build_parser().parse_args(["train", "--workers", "2", "--rounds", "3"])
    assert (args.workers, args.rounds) == (2, 3)
    with pytest.raises(SystemExit, match="--rounds needs --workers"):
        main(["train", "--qa-data", train_data, "--rounds", "2", "--out", str(tmp_path / "y")])


def test_cli_workers_run_local_sgd(train_data, tmp_path, monkeypatch):
    # the CLI builds the whole run's config and hands the rounds to train_local_sgd
    import sac_rag.training.local_sgd as lsgd

    calls = []

    def fake(cfg, *, workers, rounds, **kw):
        calls.append((cfg, workers, rounds))
        return tmp_path / "round-3" / "average"

    monkeypatch.setattr(lsgd, "train_local_sgd", fake)
    assert main(["train", "--qa-data", train_data, "--workers", "2", "--rounds", "3", "--time-budget", "90", "--seed", "5",
                 "--decay-steps", "334", "--out", str(tmp_path)]) == 0
    (cfg, workers, rounds), = calls
    assert (workers, rounds) == (2, 3)
    assert (cfg.time_budget_s, cfg.decay_steps, cfg.seed, cfg.schedule_window) == (90.0, 334, 5, (0.0, 1.0))
