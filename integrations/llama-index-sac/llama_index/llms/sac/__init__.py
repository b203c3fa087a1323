from llama_index.llms.sac.base import SAC

__all__ = ["SAC"]
