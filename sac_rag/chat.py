"""Turning chat messages into one prompt string, with the base model's own chat template where it has one.

Markers in message contents are plain text to this module: they pass through
templates untouched and are resolved later by the compressor. A model without
a chat template (such as the embedded Gemma 3 270M base) gets a simple
``System/User/Assistant`` layout. No tensors, no stores.
"""

from __future__ import annotations

from typing import Sequence

from .errors import InvalidInputError

__all__ = ["render_chat", "ROLES"]

ROLES = ("system", "user", "assistant")
_FALLBACK_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_chat(tokenizer, messages: Sequence[dict]) -> str:
    """``messages``: ``{"role": "system"|"user"|"assistant", "content": str}`` dicts, in order."""
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Sequence):
        raise InvalidInputError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    if not messages:
        raise InvalidInputError("at least one message is needed")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise InvalidInputError(f"message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {m!r:.200}")
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # templates that refuse system prompts etc.: fold the system prompt in
            if messages[0]["role"] == "system" and len(messages) > 1:
                merged = [{"role": messages[1]["role"], "content": messages[0]["content"] + "\n\n" + messages[1]["content"]},
                          *messages[2:]]
                return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
            raise InvalidInputError(f"the model's chat template rejected the messages: {exc}") from exc
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"].rstrip() + "\n\n")
        else:
            parts.append(f"{_FALLBACK_NAMES[m['role']]}: {m['content'].strip()}\n")
    parts.append("Assistant:")
    return "".join(parts)
