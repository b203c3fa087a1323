"""The on-disk adapter: round trip onto the same base, refusal on another base."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import TINY, scramble_adapter, text_of_length
from sac_rag.adapter import read_adapter
from sac_rag import AdapterMismatchError, ConfigError, ModelLoadError, ModelMismatchError, SACConfig, SACModel


@pytest.fixture
def saved(make_sac, arch, tmp_path):
    sac = make_sac(arch, ratio=4, lora_rank=8, lora_targets=("q_proj", "v_proj"))
    before = sac.fingerprint
    scramble_adapter(sac)
    assert sac.fingerprint != before, "the fingerprint follows the adapter weights"
    path = sac.save_adapter(tmp_path / "adapter", info={"trained": True, "steps": 3})
    return sac, path


def test_adapter_directory_layout(saved):
    sac, path = saved
    names = {p.name for p in path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "sac_embeddings.safetensors", "sac_adapter.json"} <= names
    meta = json.loads((path / "sac_adapter.json").read_text())
    assert meta["format"] == "sac-rag/adapter"
    assert SACConfig.from_dict(meta["config"]) == sac.config
    assert meta["base_fingerprint"] == sac.base_fingerprint
    assert meta["info"] == {"trained": True, "steps": 3}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no temporary directory left behind"
    # our own short card, not peft's blank template
    card = (path / "README.md").read_text()
    assert card.startswith(f"# sac-rag adapter: SAC at ratio {sac.config.ratio}") and "More Information Needed" not in card


def test_adapter_card_names_the_training_record():
    from sac_rag.adapter import adapter_card

    meta = {"base_model": "b", "config": {"ratio": 5, "lora_rank": 16, "lora_targets": ["q_proj"]},
            "info": {"trained": True, "stage": "qa", "step": 1050, "items": 4200, "recipe": "<=1 distractors",
                     "before": {"items": 4136}, "status": "below the bar"}}
    card = adapter_card(meta)
    assert "Training (last run): stage qa, step 1,050, items 4,200, after 4,136 items already in the adapter it " \
           "started from; recipe: <=1 distractors." in card
    assert "Status: below the bar" in card
    assert "Untrained" in adapter_card({"config": {"ratio": 15}, "info": {}})


def test_adapter_round_trip(saved, arch, tok):
    sac, path = saved
    loaded = SACModel.from_model(TINY[arch](0), tok, adapter=path)
    assert loaded.config == sac.config
    assert loaded.fingerprint == sac.fingerprint
    assert loaded.adapter_fingerprint == sac.adapter_fingerprint
    assert read_adapter(path).fingerprint == sac.fingerprint, "the files alone give the loaded model's fingerprint"
    assert loaded.trained and loaded.adapter_info["steps"] == 3
    texts = [text_of_length(90), text_of_length(600, 1)]
    for a, b in zip(sac.compress_batch(texts), loaded.compress_batch(texts)):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values), "identical compress output"
        assert torch.equal(a.positions, b.positions) and a.fingerprint == b.fingerprint
    # A KV from the original decodes on the loaded model (same fingerprint), with the same result.
    kv = sac.compress(texts[0])
    assert loaded.generate([kv, "q?"], max_new_tokens=6) == sac.generate([kv, "q?"], max_new_tokens=6)
    # And the adapter was really loaded: an untrained model compresses differently.
    fresh = SACModel.from_model(TINY[arch](0), tok, sac.config)
    assert fresh.fingerprint != sac.fingerprint
    assert not torch.allclose(fresh.compress(texts[0]).keys, kv.keys, atol=1e-3)


def test_load_adapter_into_existing_model(saved, arch, tok):
    sac, path = saved
    target = SACModel.from_model(TINY[arch](0), tok, sac.config)
    target.load_adapter(path)
    assert target.fingerprint == sac.fingerprint
    assert torch.allclose(target.compress("abc def").keys, sac.compress("abc def").keys, atol=1e-6)


def test_adapter_on_another_seed_raises(saved, arch, tok):
    _, path = saved
    with pytest.raises(AdapterMismatchError):
        SACModel.from_model(TINY[arch](1), tok, adapter=path)


def test_adapter_on_another_architecture_raises(saved, arch, tok):
    _, path = saved
    other = "gemma3" if arch == "llama" else "llama"
    with pytest.raises(AdapterMismatchError) as info:
        SACModel.from_model(TINY[other](0), tok, adapter=path)
    assert isinstance(info.value, ModelMismatchError)


def test_load_adapter_onto_another_base_raises(saved, arch, tok):
    sac, path = saved
    stranger = SACModel.from_model(TINY[arch](2), tok, sac.config)
    with pytest.raises(AdapterMismatchError):
        stranger.load_adapter(path)


def test_adapter_config_must_match(saved, arch, tok):
    sac, path = saved
    with pytest.raises(ConfigError):
        SACModel.from_model(TINY[arch](0), tok, SACConfig(ratio=9), adapter=path)
    other_config = SACModel.from_model(TINY[arch](0), tok, SACConfig(ratio=9, lora_rank=8, lora_targets=("q_proj", "v_proj")))
    with pytest.raises(ConfigError):
        other_config.load_adapter(path)


def test_adapter_without_lora_round_trip(make_sac, tok, tmp_path):
    sac = make_sac("llama", ratio=5, lora_rank=0, anchor_embedding="shared")
    scramble_adapter(sac, seed=4)
    path = sac.save_adapter(tmp_path / "no-lora")
    assert not (path / "adapter_model.safetensors").exists()
    loaded = SACModel.from_model(TINY["llama"](0), tok, adapter=path)
    assert loaded.fingerprint == sac.fingerprint == read_adapter(path).fingerprint
    assert torch.allclose(loaded.compress("hello there").keys, sac.compress("hello there").keys, atol=1e-6)


def test_save_adapter_replaces_an_existing_one(make_sac, tok, tmp_path):
    sac = make_sac("llama", ratio=5)
    path = tmp_path / "adapter"
    sac.save_adapter(path)
    first = sac.fingerprint
    scramble_adapter(sac, seed=9)
    sac.save_adapter(path)
    assert sac.fingerprint != first
    assert SACModel.from_model(TINY["llama"](0), tok, adapter=path).fingerprint == sac.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_broken_adapter_directories(make_sac, tok, tmp_path):
    sac = make_sac("llama", ratio=5)
    with pytest.raises(ModelLoadError):
        SACModel.from_model(TINY["llama"](0), tok, adapter=tmp_path / "missing")
    path = sac.save_adapter(tmp_path / "a")
    meta_path = path / "sac_adapter.json"
    meta = json.loads(meta_path.read_text())

    meta_path.write_text("{not json")
    with pytest.raises(ModelLoadError):
        SACModel.from_model(TINY["llama"](0), tok, adapter=path)

    meta_path.write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(ModelLoadError):
        SACModel.from_model(TINY["llama"](0), tok, adapter=path)

    meta_path.write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(AdapterMismatchError):
        SACModel.from_model(TINY["llama"](0), tok, adapter=path)

    meta_path.write_text(json.dumps(meta))
    emb = load_file(path / "sac_embeddings.safetensors")
    save_file({"anchor": emb["anchor"][:3].contiguous(), "lm": emb["lm"]}, path / "sac_embeddings.safetensors")
    with pytest.raises(AdapterMismatchError):
        SACModel.from_model(TINY["llama"](0), tok, adapter=path)

    (path / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelLoadError):
        SACModel.from_model(TINY["llama"](0), tok, adapter=path)
