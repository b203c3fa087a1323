"""Prompt markers: the compact reference to a stored passage that travels inside prompt text.

A marker looks like ``[[sac:0123456789abcdef01234567]]``: ASCII, no spaces,
quotes, backslashes, dots or commas, so it survives joins, re-splitting into
sentences or words, metadata headers, chat templates and Python ``repr``. Its
24 hex digits are an HMAC of the passage's store key under a secret that
only the compressor holds, so knowing a passage's text (hence its content
hash) does not let anyone write its marker. This module makes, finds and
splits markers; it does not know stores or models.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from .errors import InvalidInputError

__all__ = ["MARKER_RE", "MarkerCodec", "split_markers", "find_markers", "neutralize"]

MARKER_RE = re.compile(r"\[\[sac:([0-9a-f]{24})\]\]")
_LOOSE_RE = re.compile(r"\[\[\s*sac\s*:", re.IGNORECASE)


class MarkerCodec:
    """Issues markers for store keys with a secret (random per codec unless given)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if not isinstance(self._secret, bytes) or len(self._secret) < 16:
            raise ValueError("marker secret must be at least 16 bytes")

    def ref(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:24]

    def marker(self, key: str) -> str:
        return f"[[sac:{self.ref(key)}]]"


def find_markers(text: str) -> list[str]:
    """The refs of every well-formed marker in ``text``, in order."""
    if not isinstance(text, str):
        raise InvalidInputError(f"find_markers takes a str, got {type(text).__name__}")
    return MARKER_RE.findall(text)


def split_markers(text: str) -> list[str | tuple[str]]:
    """Split ``text`` into plain strings and ``(ref,)`` tuples, in order; empty strings are dropped."""
    if not isinstance(text, str):
        raise InvalidInputError(f"split_markers takes a str, got {type(text).__name__}")
    out: list[str | tuple[str]] = []
    pos = 0
    for m in MARKER_RE.finditer(text):
        if m.start() > pos:
            out.append(text[pos : m.start()])
        out.append((m.group(1),))
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def neutralize(text: str) -> str:
    """Break anything marker-like in untrusted text (a document's own words), so it can never be resolved."""
    return _LOOSE_RE.sub("[[sac-text:", text)
