"""sac-rag: Semantic-Anchor Compression for retrieval-augmented generation.

Data flow: text -> anchors (:mod:`anchors`) -> anchor KV (:mod:`encoder`, :mod:`kv`)
-> generation from KV and text (:mod:`generation`). :class:`SACModel` ties them together.
"""

__version__ = "0.1.0"

from .config import SACConfig
from .errors import (
    AdapterMismatchError,
    ConfigError,
    CorruptKVError,
    InputTooLargeError,
    InvalidInputError,
    KVMismatchError,
    ModelLoadError,
    ModelMismatchError,
    SACError,
)
from .generation import GenerationOutput, StreamPiece, Usage
from .kv import AnchorKV
from .sac_model import SACModel

__all__ = [
    "__version__",
    "SACModel",
    "SACConfig",
    "AnchorKV",
    "GenerationOutput",
    "StreamPiece",
    "Usage",
    "SACError",
    "InvalidInputError",
    "InputTooLargeError",
    "ConfigError",
    "CorruptKVError",
    "ModelMismatchError",
    "AdapterMismatchError",
    "KVMismatchError",
    "ModelLoadError",
]
