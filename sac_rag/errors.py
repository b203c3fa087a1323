"""Typed errors raised by sac-rag.

Every error the library raises on purpose derives from :class:`SACError`, so a
service can catch one class. The subclasses say what went wrong: bad input,
an invalid configuration, a corrupted file, or a KV/adapter made for another
model. This module knows nothing about models or tensors.
"""

from __future__ import annotations

__all__ = [
    "SACError",
    "InvalidInputError",
    "InputTooLargeError",
    "ConfigError",
    "CorruptFileError",
    "CorruptKVError",
    "ModelMismatchError",
    "AdapterMismatchError",
    "KVMismatchError",
    "ModelLoadError",
    "UnknownMarkerError",
]


class SACError(Exception):
    """Base class of every error raised by sac-rag."""


class InvalidInputError(SACError, ValueError):
    """Text or segments that cannot be compressed or generated from (empty, not a string, ...)."""


class InputTooLargeError(InvalidInputError):
    """An input exceeds the configured size limit (``SACConfig.max_input_tokens``)."""


class ConfigError(SACError, ValueError):
    """A configuration value is invalid; the message says what was expected and what arrived."""


class CorruptFileError(SACError):
    """A file sac-rag wrote (and reads back) is truncated, altered, or not the kind of file expected."""


class CorruptKVError(CorruptFileError):
    """A stored AnchorKV file is truncated, altered, or not an AnchorKV file at all."""


class ModelMismatchError(SACError):
    """Something made for one base model / adapter / config was used with another."""


class AdapterMismatchError(ModelMismatchError):
    """An adapter was trained on a different base model than the one it is loaded onto."""


class KVMismatchError(ModelMismatchError):
    """An AnchorKV was compressed by a different model, adapter or config than the one decoding."""


class ModelLoadError(SACError):
    """A base model or adapter could not be found or loaded."""


class UnknownMarkerError(SACError):
    """A prompt holds a marker this compressor did not issue (forged, stale, or from another process)."""


def check_text(text: str, what: str) -> None:
    """Refuse a str that cannot be UTF-8 encoded (lone surrogates, e.g. from ``surrogateescape`` decoding).

    Tokenizers and hashing need UTF-8; without this check such text fails deep inside with a TypeError.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"{what} holds a character that is not valid Unicode text ({exc.object[exc.start]!r} at {exc.start}: a lone "
                "surrogate); decode bytes with errors='replace' before passing them"
            ) from None
