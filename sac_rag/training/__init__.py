"""Training SAC adapters: data loading (:mod:`data`), example building (:mod:`tasks`), the loop (:mod:`trainer`),
averaging runs (:mod:`average`) and local SGD over several processes (:mod:`local_sgd`)."""

from .average import AverageResult, average_adapters
from .data import QAExample, load_examples, load_text
from .local_sgd import LocalSGDError, train_local_sgd
from .trainer import SourceShare, TrainConfig, mixture, train

__all__ = ["QAExample", "load_examples", "load_text", "TrainConfig", "train", "SourceShare", "mixture", "AverageResult",
           "average_adapters", "LocalSGDError", "train_local_sgd"]
