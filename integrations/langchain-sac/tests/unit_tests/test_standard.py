"""LangChain's standard unit tests for ChatSAC, on a tiny random model (no downloads, no network).

Standard tests that cannot apply to ChatSAC are overridden with ``xfail`` and a reason (as the suite's own
``test_no_overrides_DO_NOT_OVERRIDE`` requires); their bodies show the failure instead of skipping.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.unit_tests import ChatModelUnitTests
from sac_rag.compressor import SACCompressor
from sac_rag.testing import tiny_sac

from langchain_sac import ChatSAC

COMPRESSOR = SACCompressor(tiny_sac("llama"))


class TestChatSACUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatSAC]:
        return ChatSAC

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # max_tokens=8 goes through standard_chat_model_params: test_standard_params passes max_tokens itself,
        # next to **chat_model_params, and a second max_tokens there would be a TypeError.
        return {"compressor": COMPRESSOR}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        return {**super().standard_chat_model_params, "max_tokens": 8}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @pytest.mark.xfail(reason="ChatSAC reads no environment variables: no API key, no endpoint; the model is local "
                              "and comes with the compressor", strict=True)
    def test_init_from_env(self) -> None:
        env_params, _, _ = self.init_from_env_params
        assert env_params, "ChatSAC has nothing to configure from the environment"

    @pytest.mark.xfail(reason="ChatSAC holds a live SACCompressor (model weights in memory, a KV store, a marker "
                              "secret); it is not LangChain-serializable", strict=True)
    def test_serdes(self, model: BaseChatModel, snapshot: Any) -> None:
        assert self.chat_model_class.is_lc_serializable()

    @pytest.mark.xfail(reason="ChatSAC serves the one model its compressor holds: a per-call model= cannot switch "
                              "it, so traces keep naming the model that actually answered", strict=True,
                       raises=AssertionError)
    def test_standard_params_model_override(self, model: BaseChatModel) -> None:
        super().test_standard_params_model_override(model)
