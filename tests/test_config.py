"""SACConfig: validated at construction, serializable, fingerprinted."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sac_rag import ConfigError, SACConfig, SACError


def every_other(chunk_len: int, ratio: int) -> list[int]:
    return list(range(0, chunk_len, 2))


def test_defaults_follow_the_paper():
    cfg = SACConfig()
    assert (cfg.ratio, cfg.chunk_tokens, cfg.anchor_strategy, cfg.anchor_embedding) == (5, 510, "uniform", "per_slot")
    assert cfg.bidirectional is True and cfg.lm_token is True
    assert cfg.template == "### Context:\n"
    assert cfg.anchor_slots == 102
    assert SACConfig(ratio=15).anchor_slots == 34


@pytest.mark.parametrize(
    "fields",
    [
        {"ratio": 0},
        {"ratio": -3},
        {"ratio": 2.5},
        {"ratio": "5"},
        {"ratio": True},
        {"ratio": 600},  # more than chunk_tokens
        {"chunk_tokens": 0},
        {"chunk_tokens": None},
        {"anchor_strategy": "random"},
        {"anchor_strategy": None},
        {"anchor_strategy": 3},
        {"anchor_embedding": "learned"},
        {"anchor_embedding": None},
        {"bidirectional": 1},
        {"bidirectional": "yes"},
        {"lm_token": None},
        {"lm_token": 0},
        {"lm_tokens": 0},
        {"lm_tokens": 65},
        {"lm_tokens": 2.0},
        {"lm_tokens": True},
        {"lora_rank": -1},
        {"lora_rank": 8.0},
        {"lora_alpha": 0},
        {"lora_targets": ()},
        {"lora_targets": []},
        {"lora_targets": "q_proj"},
        {"lora_targets": ("q_proj", "")},
        {"lora_targets": ("q_proj", 3)},
        {"template": None},
        {"template": b"### Context:\n"},
        {"max_input_tokens": 0},
        {"max_input_tokens": 1e6},
    ],
    ids=lambda f: "-".join(f"{k}={v!r}" for k, v in f.items()),
)
def test_invalid_values_raise_config_error(fields):
    with pytest.raises(ConfigError) as info:
        SACConfig(**fields)
    assert isinstance(info.value, SACError)
    name = next(iter(fields))
    assert name in str(info.value), "the message names the bad field"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"ratio": 1},
        {"ratio": 510},
        {"ratio": 15, "anchor_strategy": "segment_end", "anchor_embedding": "shared"},
        {"anchor_embedding": "none", "bidirectional": False, "lm_token": False, "template": "", "lora_rank": 0},
        {"lora_targets": ["q_proj", "v_proj"], "lora_rank": 128, "lora_alpha": 256},
        {"chunk_tokens": 64, "ratio": 4, "max_input_tokens": 1000},
    ],
)
def test_to_dict_from_dict_round_trip(fields):
    cfg = SACConfig(**fields)
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data, "to_dict is plain JSON"
    back = SACConfig.from_dict(json.loads(json.dumps(data)))
    assert back == cfg
    assert back.fingerprint() == cfg.fingerprint()
    assert isinstance(back.lora_targets, tuple)


def test_callable_strategy_round_trip_needs_the_callable():
    cfg = SACConfig(anchor_strategy=every_other)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["anchor_strategy"].startswith("callable:") and "every_other" in data["anchor_strategy"]
    with pytest.raises(ConfigError):
        SACConfig.from_dict(data)
    back = SACConfig.from_dict(data, anchor_strategy=every_other)
    assert back == cfg
    assert back.anchor_slots == cfg.chunk_tokens


def test_from_dict_rejects_unknown_fields():
    data = SACConfig().to_dict()
    data["ratoi"] = 5
    with pytest.raises(ConfigError, match="ratoi"):
        SACConfig.from_dict(data)


def test_from_dict_validates_values():
    data = SACConfig().to_dict()
    data["ratio"] = 0
    with pytest.raises(ConfigError):
        SACConfig.from_dict(data)


def test_config_is_frozen():
    cfg = SACConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ratio = 3  # type: ignore[misc]


def test_lora_targets_list_becomes_tuple_and_config_hashable():
    cfg = SACConfig(lora_targets=["q_proj", "v_proj"])
    assert cfg.lora_targets == ("q_proj", "v_proj")
    assert cfg == SACConfig(lora_targets=("q_proj", "v_proj"))
    assert hash(cfg) == hash(SACConfig(lora_targets=("q_proj", "v_proj")))


def test_fingerprint_tracks_what_changes_the_kv():
    base = SACConfig()
    assert base.fingerprint() == SACConfig().fingerprint()
    changed = [
        SACConfig(ratio=15),
        SACConfig(chunk_tokens=256),
        SACConfig(anchor_strategy="segment_end"),
        SACConfig(anchor_embedding="shared"),
        SACConfig(bidirectional=False),
        SACConfig(lm_token=False),
        SACConfig(lora_rank=8),
        SACConfig(template=""),
    ]
    prints = {c.fingerprint() for c in changed}
    assert base.fingerprint() not in prints
    assert len(prints) == len(changed)
    # A size limit does not change what a KV holds.
    assert SACConfig(max_input_tokens=10).fingerprint() == base.fingerprint()


def test_more_lm_vectors_change_the_fingerprint_and_one_keeps_the_old_one():
    """``lm_tokens`` came after adapters and stored KVs were fingerprinted: at its default (1) the fingerprint is the
    one configs had before the field (pinned here), at any other count it differs."""
    assert SACConfig().fingerprint() == "ba878ba8f2dd36df"
    assert SACConfig(ratio=15).fingerprint() == "0fcc3eb0b21608ad"
    prints = {SACConfig(lm_tokens=k).fingerprint() for k in (1, 2, 4)}
    assert len(prints) == 3
    old = {k: v for k, v in SACConfig().to_dict().items() if k != "lm_tokens"}  # an adapter saved before the field
    assert SACConfig.from_dict(old) == SACConfig() and SACConfig.from_dict(SACConfig(lm_tokens=3).to_dict()).lm_tokens == 3
