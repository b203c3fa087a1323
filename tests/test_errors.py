"""Typed errors: bad input is refused with a SACError subclass, never a bare exception."""

from __future__ import annotations

import inspect

import pytest

import sac_rag
from helpers import TINY, text_of_length
from sac_rag import (
    AdapterMismatchError,
    ConfigError,
    CorruptFileError,
    CorruptKVError,
    InputTooLargeError,
    InvalidInputError,
    KVMismatchError,
    ModelLoadError,
    ModelMismatchError,
    SACConfig,
    SACError,
    SACModel,
)


def test_every_exported_error_is_a_sac_error():
    errors = [obj for name, obj in vars(sac_rag).items() if inspect.isclass(obj) and issubclass(obj, Exception)]
    assert len(errors) == 11
    for err in errors:
        assert issubclass(err, SACError)
    assert issubclass(InputTooLargeError, InvalidInputError)
    assert issubclass(InvalidInputError, ValueError) and issubclass(ConfigError, ValueError)
    assert issubclass(AdapterMismatchError, ModelMismatchError) and issubclass(KVMismatchError, ModelMismatchError)
    assert issubclass(CorruptKVError, CorruptFileError)  # a KV file is one of the files sac-rag reads back
    for err in (CorruptKVError, ModelLoadError):
        assert not issubclass(err, ModelMismatchError)


@pytest.fixture
def sac(make_sac):
    return make_sac("llama", ratio=5, max_input_tokens=300)


@pytest.mark.parametrize(
    "bad",
    ["", " ", "   \n\t  ", "\n", None, 42, b"bytes are not text", ["a list"], "nul \x00 byte"],
    ids=["empty", "space", "whitespace", "newline", "none", "int", "bytes", "list", "nul"],
)
def test_bad_passages_raise_invalid_input(sac, bad):
    with pytest.raises(InvalidInputError) as info:
        sac.compress(bad)
    assert isinstance(info.value, SACError)
    with pytest.raises(InvalidInputError):
        sac.compress_batch(["a fine passage", bad])


def test_passage_over_max_input_tokens(sac):
    limit = sac.config.max_input_tokens
    template = len(sac.config.template)
    assert sac.compress(text_of_length(limit - template)).num_tokens == limit
    with pytest.raises(InputTooLargeError) as info:
        sac.compress(text_of_length(limit - template + 1))
    assert isinstance(info.value, InvalidInputError) and isinstance(info.value, SACError)
    with pytest.raises(InputTooLargeError):
        sac.compress("x" * (20 * limit))


def test_compress_batch_argument_checks(sac):
    with pytest.raises(InvalidInputError):
        sac.compress_batch("a single string, not a list")
    with pytest.raises(InvalidInputError):
        sac.compress_batch(["ok"], batch_size=0)
    with pytest.raises(InvalidInputError):
        sac.compress_batch(["ok"], batch_size=True)
    assert sac.compress_batch([]) == []


def test_bad_segments_raise_invalid_input(sac):
    kv = sac.compress("a passage")
    for segments in ([], "a bare string", kv, [kv, 3], [None], [kv, b"bytes"]):
        with pytest.raises(InvalidInputError):
            sac.generate(segments, max_new_tokens=2)


def test_nothing_to_decode_from(make_sac):
    sac = make_sac("llama", ratio=5, lm_token=False)
    with pytest.raises(InvalidInputError):
        sac.generate([sac.compress("a passage")], max_new_tokens=2)


def test_prompt_text_over_the_limit(sac):
    with pytest.raises(InputTooLargeError):
        sac.generate([text_of_length(301)], max_new_tokens=1)
    with pytest.raises(InputTooLargeError):
        sac.generate([text_of_length(200), sac.compress("kv"), text_of_length(120)], max_new_tokens=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"max_new_tokens": -1},
        {"max_new_tokens": 2.0},
        {"max_new_tokens": True},
        {"temperature": -0.5},
        {"temperature": "hot"},
        {"top_p": 0},
        {"top_p": 1.5},
        {"seed": "seven"},
        {"seed": 1.5},
        {"stop": [""]},
        {"stop": [3]},
    ],
    ids=lambda k: "-".join(f"{a}={b!r}" for a, b in k.items()),
)
def test_bad_sampling_parameters(sac, kwargs):
    with pytest.raises(InvalidInputError):
        sac.generate(["prompt"], **{"max_new_tokens": 2, **kwargs})
    with pytest.raises(InvalidInputError):
        list(sac.stream(["prompt"], **{"max_new_tokens": 2, **kwargs}))


def test_bad_question_for_answer(sac):
    for question in ("", "   ", None):
        with pytest.raises(InvalidInputError):
            sac.answer(question, ["a passage"])
    with pytest.raises(InvalidInputError):
        sac.answer("fine question?", ["   "])


def test_model_construction_errors(tok):

    with pytest.raises(ConfigError):
        SACModel(TINY["llama"](0), tok, {"ratio": 5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SACModel.from_model(TINY["llama"](0), tok, SACConfig(lora_targets=("no_such_module",)))
