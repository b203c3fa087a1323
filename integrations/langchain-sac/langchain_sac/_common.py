"""What ChatSAC and SACLLM share: sampling fields, stop merging, usage translation."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator, Optional

from langchain_core.messages.ai import UsageMetadata
from pydantic import BaseModel, ConfigDict, Field
from sac_rag.compressor import SACCompressor
from sac_rag.generation import Usage


class SACParams(BaseModel):
    """Fields common to the SAC chat model and LLM."""

    compressor: SACCompressor = Field(default_factory=SACCompressor, description="Shared with SACDocumentCompressor.")
    max_tokens: int = Field(default=256, ge=1, description="Most tokens to generate.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 is greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: Optional[int] = Field(default=None, description="Seed for sampling.")
    stop: Optional[list[str]] = Field(default=None, description="Stop strings, never emitted.")
    grounded: bool = Field(
        default=False,
        description="Extractive answers: the answer is a span of the compressed passages in the prompt "
        "(response_metadata['span'] says which passage, counted in prompt order, and where).",
    )
    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _gen_kwargs(self, stop: Optional[list[str]], **kwargs: Any) -> dict[str, Any]:
        stops = [*(self.stop or []), *(stop or []), *(kwargs.get("stop") or [])]
        return {
            "max_new_tokens": int(kwargs.get("max_tokens", self.max_tokens)),
            "temperature": float(kwargs.get("temperature", self.temperature)),
            "top_p": float(kwargs.get("top_p", self.top_p)),
            "seed": kwargs.get("seed", self.seed),
            "stop": list(dict.fromkeys(stops)) or None,
            "grounded": bool(kwargs.get("grounded", self.grounded)),
        }

    def _pieces(self, prompt: str, stop: Optional[list[str]], run_manager: Any, **kwargs: Any) -> Iterator[Any]:
        """Stream ``prompt`` as chunks, reporting each new token to the callbacks; each model class wraps a
        StreamPiece in its own chunk type with its ``_chunk`` method."""
        for piece in self.compressor.stream(prompt, **self._gen_kwargs(stop, **kwargs)):
            chunk = self._chunk(piece)
            if run_manager and piece.text:
                run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    async def _apieces(self, prompt: str, stop: Optional[list[str]], run_manager: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """:meth:`_pieces` without blocking the event loop (the model runs in a worker thread)."""
        async for piece in self.compressor.astream(prompt, **self._gen_kwargs(stop, **kwargs)):
            chunk = self._chunk(piece)
            if run_manager and piece.text:
                await run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    @property
    def _model_name(self) -> str:
        sac = self.compressor.model
        return f"sac:{sac.source}:x{sac.config.ratio}"


def usage_metadata(usage: Usage) -> UsageMetadata:
    """Anchors count as input tokens: they are what the model reads instead of the passage text."""
    inp = usage.prompt_tokens + usage.anchors
    return UsageMetadata(input_tokens=inp, output_tokens=usage.generated_tokens, total_tokens=inp + usage.generated_tokens)


def response_metadata(usage: Usage, finish_reason: Optional[str], model_name: str, span: Any = None) -> dict[str, Any]:
    meta = {"finish_reason": finish_reason, "model_name": model_name, "sac_usage": usage.to_dict()}
    if span is not None:  # grounded decoding: where the answer lies
        meta["span"] = span.to_dict()
    return meta
