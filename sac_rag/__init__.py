"""sac-rag: Semantic-Anchor Compression for retrieval-augmented generation.

Data flow: text -> anchors (:mod:`anchors`) -> anchor KV (:mod:`encoder`, :mod:`kv`)
-> store (:mod:`store`) -> generation from KV and text (:mod:`generation`) -> integrations, which share one
:class:`SACCompressor` (:mod:`compressor`, :mod:`markers`). :class:`SACModel` ties the model side together.
"""

__version__ = "0.1.0"

from .compressor import CompressedPassage, SACCompressor
from .config import SACConfig
from .errors import (
    AdapterMismatchError,
    ConfigError,
    CorruptFileError,
    CorruptKVError,
    InputTooLargeError,
    InvalidInputError,
    KVMismatchError,
    ModelLoadError,
    ModelMismatchError,
    SACError,
    UnknownMarkerError,
)
from .generation import GenerationOutput, StreamPiece, Usage
from .kv import AnchorKV
from .sac_model import SACModel
from .store import KVStore, StoreStats

__all__ = [
    "__version__",
    "SACModel",
    "SACConfig",
    "SACCompressor",
    "CompressedPassage",
    "KVStore",
    "StoreStats",
    "UnknownMarkerError",
    "AnchorKV",
    "GenerationOutput",
    "StreamPiece",
    "Usage",
    "SACError",
    "InvalidInputError",
    "InputTooLargeError",
    "ConfigError",
    "CorruptFileError",
    "CorruptKVError",
    "ModelMismatchError",
    "AdapterMismatchError",
    "KVMismatchError",
    "ModelLoadError",
]
