"""LangChain integration for sac-rag.

``SACDocumentCompressor`` replaces retrieved documents' text with markers that reference their stored anchor KV;
``ChatSAC`` and ``SACLLM`` answer from prompts holding those markers. Share one ``SACCompressor`` between them.
"""

from langchain_sac.chat_models import ChatSAC
from langchain_sac.document_compressors import SACDocumentCompressor, original_text
from langchain_sac.llms import SACLLM

__all__ = ["ChatSAC", "SACLLM", "SACDocumentCompressor", "original_text"]
