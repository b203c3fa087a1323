"""ChatSAC: a LangChain chat model answering from prompts that hold SAC markers."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator, Optional

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from sac_rag.chat import render_chat
from sac_rag.errors import InvalidInputError

from langchain_sac._common import SACParams, response_metadata, usage_metadata

__all__ = ["ChatSAC"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "user": "user", "assistant": "assistant"}


_MEDIA_BLOCKS = {"image", "image_url", "audio", "input_audio", "video", "file", "document", "media"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:  # content blocks: keep the text ones
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text", "")
            if not isinstance(text, str):
                raise InvalidInputError(f"a text content block holds a {type(text).__name__}, expected str")
            parts.append(text)
        elif isinstance(block, dict) and block.get("type") in _MEDIA_BLOCKS:
            # Dropping it silently would answer as if the image/audio/file were not there.
            raise InvalidInputError(f"ChatSAC reads text only; got a {block.get('type')!r} content block")
    return "".join(parts)


class ChatSAC(SACParams, BaseChatModel):
    """Chat model over an SAC base LLM. Markers from ``SACDocumentCompressor`` are read as stored anchor KV.

    The base model's chat template is applied (system prompts included) where it has one. Token counts use the
    model's own tokenizer. Safe under ``.batch`` (threads); ``ainvoke``/``astream`` never block the event loop.
    """

    @property
    def _llm_type(self) -> str:
        return "sac-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._model_name, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def _get_ls_params(self, stop: Optional[list[str]] = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "sac"
        params["ls_model_name"] = self._model_name
        return params

    def _prompt(self, messages: list[BaseMessage]) -> str:
        converted = []
        for m in messages:
            role = _ROLES.get(m.type)
            if role is None:
                raise InvalidInputError(f"ChatSAC cannot take {m.type!r} messages (no tool calling)")
            converted.append({"role": role, "content": _text(m.content)})
        return render_chat(self.compressor.model.tokenizer, converted)

    def get_token_ids(self, text: str) -> list[int]:
        return self.compressor.model.tokenize(text)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(self.compressor.generate(self._prompt(messages), **self._gen_kwargs(stop, **kwargs)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._pieces(self._prompt(messages), stop, run_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._apieces(self._prompt(messages), stop, run_manager, **kwargs):
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: Optional[list[str]] = None,
        run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(await self.compressor.agenerate(self._prompt(messages), **self._gen_kwargs(stop, **kwargs)))

    def _result(self, out: Any) -> ChatResult:
        meta = response_metadata(out.usage, out.finish_reason, self._model_name, out.span)
        msg = AIMessage(content=out.text, usage_metadata=usage_metadata(out.usage), response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=msg, generation_info={"finish_reason": out.finish_reason})])

    def _chunk(self, piece: Any) -> ChatGenerationChunk:
        if piece.finish_reason is None:
            return ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
        meta = response_metadata(piece.usage, piece.finish_reason, self._model_name, piece.span)
        msg = AIMessageChunk(content=piece.text, usage_metadata=usage_metadata(piece.usage), response_metadata=meta,
                             chunk_position="last")
        return ChatGenerationChunk(message=msg, generation_info={"finish_reason": piece.finish_reason})
