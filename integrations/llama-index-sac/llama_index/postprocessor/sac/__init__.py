from llama_index.postprocessor.sac.base import SACPostprocessor, original_text

__all__ = ["SACPostprocessor", "original_text"]
