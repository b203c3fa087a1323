"""Fixtures for the llama-index-sac tests: a tiny random SAC model (in-process, no downloads, no OpenAI)."""

from __future__ import annotations

import os

import pytest
import torch
from llama_index.core import Settings
from sac_rag.compressor import SACCompressor
from sac_rag.testing import tiny_sac

if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

TEXTS = [
    "The Eiffel Tower is in Paris. It was finished in 1889 for the World's Fair.",
    "Mount Everest is the highest mountain above sea level. It lies in the Himalayas.",
    "Water boils at 100 degrees Celsius at sea level. At altitude it boils at a lower temperature.",
    "The Pacific is the largest ocean on Earth. It covers about a third of the planet.",
    "Honey never spoils. Jars of it were found in ancient Egyptian tombs.",
]


def pytest_configure(config):
    # peft calls a transformers API deprecated in 5.x; not ours to fix, and it drowns real warnings.
    config.addinivalue_line("filterwarnings", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def offline_settings(monkeypatch):
    """No OpenAI defaults, and LlamaIndex's global Settings restored after each test."""
    monkeypatch.setenv("IS_TESTING", "1")
    saved = {k: getattr(Settings, k) for k in ("_llm", "_embed_model", "_tokenizer", "_callback_manager")}
    yield
    for k, v in saved.items():
        setattr(Settings, k, v)


@pytest.fixture
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def sac():
    return tiny_sac("llama")


@pytest.fixture
def compressor(sac):
    return SACCompressor(sac)
