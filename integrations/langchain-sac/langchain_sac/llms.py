"""SACLLM: a LangChain text-completion LLM answering from prompts that hold SAC markers."""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator, Optional

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult

from langchain_sac._common import SACParams, response_metadata, usage_metadata

__all__ = ["SACLLM"]


class SACLLM(SACParams, BaseLLM):
    """Completion model over an SAC base LLM; the prompt is used as is (no chat template)."""

    @property
    def _llm_type(self) -> str:
        return "sac"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._model_name, "max_tokens": self.max_tokens, "temperature": self.temperature}

    def get_token_ids(self, text: str) -> list[int]:
        return self.compressor.model.tokenize(text)

    def _one(self, prompt: str, stop: Optional[list[str]], **kwargs: Any) -> Generation:
        out = self.compressor.generate(prompt, **self._gen_kwargs(stop, **kwargs))
        info = {**response_metadata(out.usage, out.finish_reason, self._model_name, out.span), "usage": dict(usage_metadata(out.usage))}
        return Generation(text=out.text, generation_info=info)

    def _generate(
        self,
        prompts: list[str],
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> LLMResult:
        gens = [[self._one(p, stop, **kwargs)] for p in prompts]
        total = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        for g in gens:
            for k in total:
                total[k] += g[0].generation_info["usage"][k]
        return LLMResult(generations=gens, llm_output={"token_usage": total, "model_name": self._model_name})

    def _stream(
        self,
        prompt: str,
        stop: Optional[list[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        yield from self._pieces(prompt, stop, run_manager, **kwargs)

    async def _astream(
        self,
        prompt: str,
        stop: Optional[list[str]] = None,
        run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for chunk in self._apieces(prompt, stop, run_manager, **kwargs):
            yield chunk

    async def _agenerate(
        self,
        prompts: list[str],
        stop: Optional[list[str]] = None,
        run_manager: Optional[AsyncCallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> LLMResult:
        import asyncio

        return await asyncio.to_thread(self._generate, prompts, stop, None, **kwargs)

    def _chunk(self, piece: Any) -> GenerationChunk:
        if piece.finish_reason is None:
            return GenerationChunk(text=piece.text)
        info = {**response_metadata(piece.usage, piece.finish_reason, self._model_name, piece.span),
                "usage": dict(usage_metadata(piece.usage))}
        return GenerationChunk(text=piece.text, generation_info=info)
