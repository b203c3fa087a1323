"""SAC: a LlamaIndex CustomLLM that answers from prompts holding SAC markers."""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from sac_rag.chat import render_chat
from sac_rag.compressor import SACCompressor
from sac_rag.errors import InvalidInputError

logger = logging.getLogger(__name__)

_ROLES = {MessageRole.SYSTEM: "system", MessageRole.USER: "user", MessageRole.ASSISTANT: "assistant"}


def _raw(piece_or_out: Any) -> dict:
    u = piece_or_out.usage
    prompt = u.prompt_tokens + u.anchors
    return {
        "usage": {"prompt_tokens": prompt, "completion_tokens": u.generated_tokens, "total_tokens": prompt + u.generated_tokens},
        "sac_usage": u.to_dict(),
        "finish_reason": piece_or_out.finish_reason,
        **({"span": piece_or_out.span.to_dict()} if getattr(piece_or_out, "span", None) is not None else {}),
    }


class SAC(CustomLLM):
    """LLM over an SAC base model; share its ``compressor`` with ``SACPostprocessor``.

    If no global LlamaIndex tokenizer is set, this sets ``Settings.tokenizer`` to the model's own tokenizer, so
    prompt packing counts real tokens and nothing is downloaded.
    """

    max_tokens: int = Field(default=256, ge=1, description="Most tokens to generate.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 is greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: Optional[int] = Field(default=None)
    stop: Optional[list[str]] = Field(default=None, description="Stop strings, never emitted.")
    grounded: bool = Field(
        default=False,
        description="Extractive answers: the answer is a span of the compressed passages in the prompt "
        "(raw['span'] says which passage, counted in prompt order, and where).",
    )
    context_window: int = Field(default=8192, ge=1, description="Tokens of prompt text (markers count as text).")
    _compressor: SACCompressor = PrivateAttr()

    def __init__(self, compressor: Optional[SACCompressor] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._compressor = compressor if compressor is not None else SACCompressor()
        # A plain function, not the bound method: a bound method's repr holds repr(self), so repr(llm) recursed forever.
        render = self._messages_to_prompt

        def messages_to_prompt(messages: Sequence[ChatMessage]) -> str:
            return render(messages)

        self.messages_to_prompt = messages_to_prompt
        from llama_index.core import Settings

        if Settings._tokenizer is None:
            Settings.tokenizer = self._compressor.model.tokenize
            logger.info("llama-index-sac: Settings.tokenizer set to the SAC model's tokenizer")

    @classmethod
    def class_name(cls) -> str:
        return "SAC"

    @property
    def compressor(self) -> SACCompressor:
        return self._compressor

    @property
    def metadata(self) -> LLMMetadata:
        sac = self._compressor.model
        return LLMMetadata(context_window=self.context_window, num_output=self.max_tokens,
                           model_name=f"sac:{sac.source}:x{sac.config.ratio}", is_chat_model=False)

    def _messages_to_prompt(self, messages: Sequence[ChatMessage]) -> str:
        converted = []
        for m in messages:
            role = _ROLES.get(m.role)
            if role is None:
                raise InvalidInputError(f"SAC cannot take {m.role} messages")
            other = [type(b).__name__ for b in getattr(m, "blocks", []) if type(b).__name__ != "TextBlock"]
            if other:
                raise InvalidInputError(f"SAC reads text only; this message holds {other}")
            converted.append({"role": role, "content": m.content or ""})
        return render_chat(self._compressor.model.tokenizer, converted)

    def _kwargs(self, **kwargs: Any) -> dict:
        stop = [*(self.stop or []), *(kwargs.get("stop") or [])]
        return {"max_new_tokens": int(kwargs.get("max_tokens", self.max_tokens)),
                "temperature": float(kwargs.get("temperature", self.temperature)),
                "top_p": float(kwargs.get("top_p", self.top_p)), "seed": kwargs.get("seed", self.seed),
                "stop": list(dict.fromkeys(stop)) or None, "grounded": bool(kwargs.get("grounded", self.grounded))}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        out = self._compressor.generate(prompt, **self._kwargs(**kwargs))
        return CompletionResponse(text=out.text, raw=_raw(out))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        stream = self._compressor.stream(prompt, **self._kwargs(**kwargs))

        def gen() -> CompletionResponseGen:
            text = ""
            for piece in stream:
                text += piece.text
                if piece.finish_reason is None:
                    yield CompletionResponse(text=text, delta=piece.text)
                else:
                    yield CompletionResponse(text=text, delta=piece.text, raw=_raw(piece))

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        out = await self._compressor.agenerate(prompt, **self._kwargs(**kwargs))
        return CompletionResponse(text=out.text, raw=_raw(out))

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        pieces = self._compressor.astream(prompt, **self._kwargs(**kwargs))

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async for piece in pieces:
                text += piece.text
                raw = _raw(piece) if piece.finish_reason is not None else None
                yield CompletionResponse(text=text, delta=piece.text, raw=raw)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        out = await self._compressor.agenerate(self._messages_to_prompt(messages), **self._kwargs(**kwargs))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=out.text), raw=_raw(out))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        pieces = self._compressor.astream(self._messages_to_prompt(messages), **self._kwargs(**kwargs))

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async for piece in pieces:
                text += piece.text
                raw = _raw(piece) if piece.finish_reason is not None else None
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece.text, raw=raw)

        return gen()
