"""Training SAC adapters: data loading (:mod:`data`), example building (:mod:`tasks`), the loop (:mod:`trainer`)."""

from .data import QAExample, load_examples, load_text
from .trainer import TrainConfig, train

__all__ = ["QAExample", "load_examples", "load_text", "TrainConfig", "train"]
