"""Shared fixtures: tiny random models (built in-process, no downloads) wrapped in SACModel.

The tiny models are deterministic for a seed, so two builds with the same seed are the
same model; a different seed is a different base model (a different fingerprint).
"""

from __future__ import annotations

import os

import pytest
import torch

from helpers import TINY, save_tiny_base, write_squad
from sac_rag import SACConfig, SACModel
from tiny import byte_tokenizer


def pytest_configure(config):
    # Small matrices: one thread is fastest, and it avoids OpenMP threads spinning against another
    # process on a small shared machine (about 10x slower with 2 threads on a busy 2-core box).
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    # peft calls a transformers API deprecated in 5.x; not ours to fix, and it drowns real warnings.
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="session")
def tok():
    return byte_tokenizer()


@pytest.fixture
def make_sac(tok):
    """``make_sac(arch="llama", seed=0, model_kwargs=None, **config_fields)``: a fresh SACModel on a tiny model."""

    def make(arch: str = "llama", seed: int = 0, model_kwargs: dict | None = None, **fields) -> SACModel:
        model = TINY[arch](seed, **(model_kwargs or {}))
        return SACModel.from_model(model, tok, SACConfig(**fields))

    return make


@pytest.fixture(params=sorted(TINY))
def arch(request):
    """Both tiny architectures: Llama 3 (llama3 rope scaling) and Gemma 3 (two rope bases, sliding window)."""
    return request.param


@pytest.fixture(scope="session")
def train_base(tmp_path_factory) -> str:
    """A tiny Llama saved as a model directory, for training runs (TrainConfig.base_model)."""
    return save_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture
def train_data(tmp_path) -> str:
    """A tiny SQuAD file (helpers.write_squad) to train on."""
    path = tmp_path / "train.json"
    write_squad(path)
    return str(path)
