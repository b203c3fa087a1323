"""Averaging adapters: the mean LoRA update (exact at the summed rank, the best cut below it), the mean
embeddings, a self-average that changes nothing, and typed refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import TINY, scramble_adapter, text_of_length
from sac_rag import AdapterMismatchError, ConfigError, SACModel
from sac_rag.cli import main
from sac_rag.training.average import average_adapters

FIELDS = dict(ratio=4, lora_rank=4, lora_alpha=8, lora_targets=("q_proj", "v_proj"))


def scrambled(make_sac, arch, seed, base_seed=0, **fields):
    """A tiny SAC with non-trivial adapter weights (LoRA B != 0, moved embeddings), as training leaves them."""
    sac = make_sac(arch, seed=base_seed, **{**FIELDS, **fields})
    scramble_adapter(sac, seed)
    return sac


def updates(path, scale) -> dict[str, torch.Tensor]:
    """Each LoRA module's weight update ``scale * B @ A`` from an adapter directory, in float64."""
    lora = load_file(path / "adapter_model.safetensors")
    return {a.split(".lora_A.")[0]: scale * lora[a.replace(".lora_A.", ".lora_B.")].double() @ lora[a].double()
            for a in lora if ".lora_A." in a}


@pytest.fixture
def pair(make_sac, arch, tmp_path):
    paths = [scrambled(make_sac, arch, seed).save_adapter(tmp_path / f"run{seed}", info={"items": 10 * seed})
             for seed in (1, 2)]
    return paths


def test_average_at_the_summed_rank_is_the_exact_mean(pair, arch, tok, tmp_path):
    result = average_adapters(pair, tmp_path / "avg", rank=8)
    scale = FIELDS["lora_alpha"] / FIELDS["lora_rank"]
    want = {k: (updates(pair[0], scale)[k] + updates(pair[1], scale)[k]) / 2 for k in updates(pair[0], scale)}
    got = updates(result.path, scale)  # the rank grows with alpha (8 -> 16), so the scale is kept
    assert set(got) == set(want) and result.modules == len(want) > 0
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5), k
    assert result.max_truncation < 1e-6
    emb = [load_file(p / "sac_embeddings.safetensors") for p in (*pair, result.path)]
    for name in ("anchor", "lm"):
        assert torch.allclose(emb[2][name], (emb[0][name] + emb[1][name]) / 2, atol=1e-6)
    meta = json.loads((result.path / "sac_adapter.json").read_text())
    assert meta["config"]["lora_rank"] == 8 and meta["config"]["lora_alpha"] == 16
    assert [s["items"] for s in meta["info"]["averaged_from"]] == [10, 20] and meta["info"]["items"] == 30
    card = (result.path / "README.md").read_text()
    assert "items 30" in card and "the average of 2 adapters" in card
    assert json.loads((result.path / "adapter_config.json").read_text())["r"] == 8
    # it loads onto the base like any adapter
    loaded = SACModel.from_model(TINY[arch](0), tok, adapter=result.path)
    assert loaded.config.lora_rank == 8 and loaded.trained


def test_average_counts_the_training_of_its_runs(make_sac, arch, tmp_path):
    from sac_rag.training.trainer import prior_training

    runs = [scrambled(make_sac, arch, seed).save_adapter(
        tmp_path / f"run{seed}", info={"stage": "qa", "items": 10 * seed, "tokens": 100 * seed, "elapsed_s": 60.0 * seed,
                                       "before": {"items": 5, "tokens": 50, "elapsed_s": 30.0}})
        for seed in (1, 2)]
    result = average_adapters(runs, tmp_path / "avg")
    info = json.loads((result.path / "sac_adapter.json").read_text())["info"]
    assert (info["items"], info["tokens"], info["elapsed_s"], info["ratio"]) == (30, 300, 180.0, FIELDS["ratio"])
    # a run continued from the average starts counting from the runs' common start plus both runs
    ratio = FIELDS["ratio"]
    assert prior_training(result.path, "qa", ratio) == {"items": 35, "tokens": 350, "elapsed_s": 210.0}
    assert prior_training(result.path, "qa", ratio + 1) == {"items": 0, "tokens": 0, "elapsed_s": 0.0}  # another ratio
    assert prior_training(result.path, "lm", ratio) == {"items": 0, "tokens": 0, "elapsed_s": 0.0}  # another stage
    # an average written before its totals were recorded (only its items): the runs' records fill them in
    meta = json.loads((result.path / "sac_adapter.json").read_text())
    for k in ("tokens", "elapsed_s"):
        del meta["info"][k]
    meta["info"]["before"] = {"items": 5}
    (result.path / "sac_adapter.json").write_text(json.dumps(meta))
    assert prior_training(result.path, "qa", ratio) == {"items": 35, "tokens": 350, "elapsed_s": 210.0}


def test_average_at_the_sources_rank_is_the_best_cut(pair, tmp_path):
    result = average_adapters(pair, tmp_path / "avg")
    assert result.rank == FIELDS["lora_rank"]
    scale = FIELDS["lora_alpha"] / FIELDS["lora_rank"]
    a, b, got = updates(pair[0], scale), updates(pair[1], scale), updates(result.path, scale)
    for k in got:
        mean = (a[k] + b[k]) / 2
        u, s, vh = torch.linalg.svd(mean)
        r = FIELDS["lora_rank"]
        best = (u[:, :r] * s[:r]) @ vh[:r]
        assert torch.allclose(got[k], best, atol=1e-5), k
        lost = float(s[r:].square().sum().sqrt() / s.square().sum().sqrt())
        assert result.truncation[k] == pytest.approx(lost, rel=1e-4, abs=1e-7)
    assert 0 < result.max_truncation < 1, "two random rank-4 updates do not share a rank-4 subspace"


def test_negative_weight_extrapolates_along_the_line(pair, tmp_path):
    """weights (1 - f, f) with f = 3: the LoRA updates and embeddings go three times as far from the first adapter
    as the second went (exact at the summed rank)."""
    result = average_adapters(pair, tmp_path / "ext", weights=[-2, 3], rank=8)
    assert result.weights == [-2.0, 3.0] and result.max_truncation < 1e-6
    info = json.loads((result.path / "sac_adapter.json").read_text())["info"]
    assert info["recipe"].startswith("the extrapolation (a negative weight) of 2 adapters")
    scale = FIELDS["lora_alpha"] / FIELDS["lora_rank"]
    start, end, got = updates(pair[0], scale), updates(pair[1], scale), updates(result.path, scale)
    for k in start:
        assert torch.allclose(got[k], start[k] + 3 * (end[k] - start[k]), atol=1e-5), k
    emb = [load_file(p / "sac_embeddings.safetensors") for p in (*pair, result.path)]
    for name in emb[0]:
        assert torch.allclose(emb[2][name], emb[0][name] + 3 * (emb[1][name] - emb[0][name]), atol=1e-5), name


def test_average_with_itself_changes_nothing(make_sac, arch, tok, tmp_path):
    sac = scrambled(make_sac, arch, 3)
    path = sac.save_adapter(tmp_path / "one")
    result = average_adapters([path, path], tmp_path / "avg", weights=[1, 3])
    assert result.weights == [0.25, 0.75] and result.max_truncation < 1e-6
    loaded = SACModel.from_model(TINY[arch](0), tok, adapter=result.path)
    assert loaded.config == sac.config
    for text in (text_of_length(90), text_of_length(300, 1)):
        a, b = sac.compress(text), loaded.compress(text)
        assert torch.allclose(a.keys, b.keys, atol=1e-4) and torch.allclose(a.values, b.values, atol=1e-4)


def test_average_without_lora(make_sac, tmp_path):
    paths = [scrambled(make_sac, "llama", s, lora_rank=0, anchor_embedding="shared").save_adapter(tmp_path / f"r{s}")
             for s in (1, 2)]
    result = average_adapters(paths, tmp_path / "avg")
    assert result.rank == 0 and result.modules == 0 and not (result.path / "adapter_model.safetensors").exists()
    emb = [load_file(p / "sac_embeddings.safetensors") for p in (*paths, result.path)]
    assert torch.allclose(emb[2]["lm"], (emb[0]["lm"] + emb[1]["lm"]) / 2, atol=1e-6)


def test_average_refuses_what_does_not_belong_together(make_sac, pair, arch, tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        average_adapters(pair[:1], tmp_path / "x")
    for bad in ([1, -1], [-1, -2], [0, 1], [float("nan"), 1], [1]):
        with pytest.raises(ConfigError, match="positive sum"):
            average_adapters(pair, tmp_path / "x", weights=bad)
    with pytest.raises(ConfigError, match="rank"):
        average_adapters(pair, tmp_path / "x", rank=0)
    other_ratio = scrambled(make_sac, arch, 5, ratio=8).save_adapter(tmp_path / "ratio8")
    with pytest.raises(ConfigError, match="another config"):
        average_adapters([pair[0], other_ratio], tmp_path / "x")
    other_base = scrambled(make_sac, arch, 5, base_seed=1).save_adapter(tmp_path / "base1")
    with pytest.raises(AdapterMismatchError, match="another base model"):
        average_adapters([pair[0], other_base], tmp_path / "x")
    assert not (tmp_path / "x").exists(), "nothing written when refused"


def test_cli_average(pair, tmp_path, capsys):
    assert main(["average", *map(str, pair), "--out", str(tmp_path / "avg"), "--weights", "1", "1"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'avg'}" in out and "LoRA rank 4" in out
    assert main(["average", str(pair[0]), "--out", str(tmp_path / "bad")]) == 2
    assert "ConfigError" in capsys.readouterr().err
