"""SACModel: one base LLM that compresses passages (adapter on) and answers from them (adapter off).

This is the public face of the core: it owns the base model (one copy of
the weights, wrapped by peft when LoRA is used), the tokenizer, the config,
the learned embeddings and the fingerprint that ties KVs and adapters to
this exact model. It turns text into token chunks for :mod:`encoder`, wraps
the results in :class:`AnchorKV`, and hands segments to :mod:`generation`.
A lock makes it safe to share between threads. It does not store KVs
(``KVStore`` does) and knows nothing about prompt markers.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import threading
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .adapter import read_adapter, sac_fingerprint, weights_fingerprint, write_adapter
from .anchors import plan_chunks
from .attention import MaskBuilder
from .config import QA_TEMPLATE, SACConfig
from .encoder import ChunkInput, SACEmbeddings, encode_chunks
from .errors import (
    AdapterMismatchError,
    ConfigError,
    CorruptKVError,
    InputTooLargeError,
    InvalidInputError,
    KVMismatchError,
    check_text,
)
from .generation import DecoderContext, GenerationOutput, SamplingParams, StreamPiece, generate, stream
from .grounding import generate_grounded
from .kv import AnchorKV
from .models import DEFAULT_MODEL, load_base, model_fingerprint, rotary_of
from .ordering import prompt_order

__all__ = ["SACModel", "shipped_adapter"]

logger = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "adapters"


def _no_end_bias(end_bias) -> None:
    if end_bias != 0:
        raise InvalidInputError("end_bias applies to grounded decoding only: pass ground=[passage texts] too")


def _grounded_pieces(out: GenerationOutput) -> Iterator[StreamPiece]:
    if out.text:
        yield StreamPiece(out.text)
    yield StreamPiece("", finish_reason=out.finish_reason, usage=out.usage, token_ids=tuple(out.token_ids), span=out.span)


def shipped_adapter(ratio: int) -> Path | None:
    """The adapter shipped inside the package for the embedded model at ``ratio``, if there is one."""
    path = SHIPPED_DIR / f"gemma-3-270m-x{ratio}"
    return path if (path / "sac_adapter.json").exists() else None


def _length_batches(order: list[int], lengths: list[int], batch_size: int, min_fill: float = 0.75) -> list[list[int]]:
    """Cut ``order`` (longest first) into batches of at most ``batch_size``; an item shorter than ``min_fill``
    of its batch's first (longest) item starts a new batch, which bounds the padding."""
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[i] >= min_fill * lengths[batches[-1][0]]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class SACModel:
    """Compress passages into anchor KV and generate from text and KV segments.

    Build it with :meth:`from_pretrained` (a model name, path or the embedded
    default) or :meth:`from_model` (a model already in memory).
    """

    def __init__(self, model, tokenizer, config: SACConfig, *, adapter=None, source: str | None = None) -> None:
        if not isinstance(config, SACConfig):
            raise ConfigError(f"config must be a SACConfig, got {type(config).__name__}")
        if adapter is not None and adapter.config != config:
            raise ConfigError("the adapter's config differs from the config passed")
        self.config = config
        self.tokenizer = tokenizer
        self.source = source or getattr(model.config, "name_or_path", None) or type(model).__name__
        self._lock = threading.RLock()
        self._bos_cache: dict = {}  # the BOS sink's KV per (device, dtype): see generation._bos_kv
        for p in model.parameters():
            p.requires_grad_(False)
        self.base_fingerprint = model_fingerprint(model)
        if adapter is not None and adapter.base_fingerprint != self.base_fingerprint:
            raise AdapterMismatchError(
                f"adapter {adapter.path} was trained on base model {adapter.meta.get('base_model')!r} "
                f"(fingerprint {adapter.base_fingerprint}), not on {self.source!r} ({self.base_fingerprint}); "
                "load it onto that base model or train an adapter for this one"
            )
        self.masks = MaskBuilder(model)
        self.rotary = rotary_of(model)
        device = model.get_input_embeddings().weight.device
        with torch.no_grad():
            sample = model.get_input_embeddings()(torch.arange(0, min(4096, model.get_input_embeddings().num_embeddings), device=device))
        self.embeddings = SACEmbeddings(config, sample).to(device)
        self._lora_layers: list = []
        if config.lora_rank > 0:
            from peft import LoraConfig, get_peft_model
            from peft.tuners.tuners_utils import BaseTunerLayer

            lora_cfg = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=list(config.lora_targets),
                                  lora_dropout=0.0, bias="none")
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                torch.manual_seed(0)  # deterministic LoRA init; the global RNG state is restored on exit
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                try:
                    model = get_peft_model(model, lora_cfg)
                except ValueError as exc:
                    raise ConfigError(f"lora_targets {config.lora_targets} do not match modules of {type(model).__name__}: {exc}") from exc
            self._lora_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self.model = model
        self.adapter_path: Path | None = None
        self.adapter_info: dict = {}
        if adapter is not None:
            self._load_weights(adapter)
        self._set_adapter(False)  # resting state: the frozen decoder
        self.model.eval()
        self._refresh_fingerprint()
        tok = tokenizer
        self.bos_id = tok.bos_token_id
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        gen_eos = getattr(getattr(self.base_model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos] if gen_eos is not None else [])
        self.eos_ids = frozenset(eos)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        adapter: str | os.PathLike | None = "auto",
        ratio: int | None = None,
        config: SACConfig | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
    ) -> "SACModel":
        """Load a base model and an adapter.

        ``adapter="auto"`` takes the adapter shipped for the embedded model at
        ``ratio`` (5 by default) when there is one, else an untrained adapter
        (with a warning); ``adapter=None`` always starts untrained; a path
        loads that adapter, whose config wins.
        """
        files = None
        if adapter == "auto":
            want = ratio or (config.ratio if config else 5)
            path = shipped_adapter(want) if name_or_path is None else None
            if path is not None:
                files = read_adapter(path)
        elif adapter is not None:
            files = read_adapter(adapter)
        if files is not None:
            if ratio is not None and files.config.ratio != ratio:
                raise ConfigError(
                    f"adapter {files.path} is for ratio {files.config.ratio}, not {ratio}: pass ratio={files.config.ratio} "
                    f"(or leave it out), or load an adapter trained for ratio {ratio}"
                )
            config = files.config
        elif config is None:
            config = SACConfig(ratio=ratio or 5)
        elif ratio is not None and config.ratio != ratio:
            raise ConfigError(f"ratio={ratio} contradicts config.ratio={config.ratio}")
        model, tokenizer = load_base(name_or_path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        sac = cls(model, tokenizer, config, adapter=files, source=str(name_or_path) if name_or_path else DEFAULT_MODEL)
        if files is None:
            warnings.warn(
                "SACModel: no trained adapter for this model and ratio; compression uses an UNTRAINED adapter and "
                "answers from compressed passages will be poor",
                stacklevel=2,
            )
        return sac

    @classmethod
    def from_model(cls, model, tokenizer, config: SACConfig | None = None, *, adapter: str | os.PathLike | None = None) -> "SACModel":
        """Wrap a causal LM already in memory (it is frozen and, if LoRA is used, wrapped by peft in place)."""
        files = read_adapter(adapter) if adapter is not None else None
        if files is not None:
            if config is not None and config != files.config:
                raise ConfigError(
                    f"the config of adapter {files.path} (ratio {files.config.ratio}) differs from the config passed "
                    f"(ratio {config.ratio}): leave config out to use the adapter's own, or load an adapter trained with this config"
                )
            config = files.config
        impl = getattr(model.config, "_attn_implementation", None)
        if impl not in ("sdpa", "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("sdpa")
        return cls(model, tokenizer, config or SACConfig(), adapter=files)

    # ---- adapter -----------------------------------------------------------------------------
    @property
    def base_model(self):
        """The underlying transformers model (inside the peft wrapper, if any)."""
        return self.model.get_base_model() if self._lora_layers else self.model

    @property
    def trained(self) -> bool:
        return bool(self.adapter_info.get("trained"))

    def _load_weights(self, files) -> None:
        if files.lora is not None:
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.model, files.lora)
            if getattr(result, "unexpected_keys", None):
                raise AdapterMismatchError(f"{files.path}: LoRA weights do not fit this model ({result.unexpected_keys[:3]})")
        with torch.no_grad():
            for name in ("anchor", "lm"):
                target = getattr(self.embeddings, name)
                if name not in files.embeddings or files.embeddings[name].shape != target.shape:
                    raise AdapterMismatchError(f"{files.path}: embedding {name!r} missing or of the wrong shape")
                target.copy_(files.embeddings[name].to(target.dtype))
        self.adapter_path = files.path
        self.adapter_info = dict(files.meta.get("info") or {})
        self.adapter_info.setdefault("trained", True)

    def load_adapter(self, path: str | os.PathLike) -> None:
        """Load adapter weights saved by :meth:`save_adapter` (same base model, same config)."""
        files = read_adapter(path)
        if files.base_fingerprint != self.base_fingerprint:
            raise AdapterMismatchError(
                f"adapter {path} belongs to base model {files.meta.get('base_model')!r} ({files.base_fingerprint}), "
                f"not {self.source!r} ({self.base_fingerprint}); load it onto that base model or train an adapter for this one"
            )
        if files.config != self.config:
            raise ConfigError(f"adapter {path} has config {files.config}, this model {self.config}; build the model from the adapter")
        with self._lock:
            self._load_weights(files)
            self._refresh_fingerprint()

    def save_adapter(self, path: str | os.PathLike, info: dict | None = None) -> Path:
        """Save LoRA + embeddings + config + base fingerprint into ``path`` (atomically)."""
        with self._lock:
            return write_adapter(
                path,
                peft_model=self.model if self._lora_layers else None,
                embeddings={"anchor": self.embeddings.anchor, "lm": self.embeddings.lm},
                config=self.config,
                base_fingerprint=self.base_fingerprint,
                base_model=self.source,
                info={**(info or {}), "trained": bool((info or {}).get("trained", self.trained))},
            )

    def _sibling(self, ratio: int) -> "SACModel":
        """A view of this model at another ratio, for training one adapter on several ratios: it shares the base
        model, the LoRA and the ``[LM]`` embedding (the same objects, so one update moves both views), and has its
        own anchor table (slots differ between ratios), freshly initialised. Not thread-safe against the original
        beyond the shared lock; meant for the training loop."""
        config = replace(self.config, ratio=ratio)
        sib = copy.copy(self)
        sib.config = config
        hidden = self.embeddings.lm.shape[-1]
        emb = SACEmbeddings(config, self.embeddings.lm.detach().reshape(-1, hidden))
        emb = emb.to(device=self.embeddings.anchor.device, dtype=self.embeddings.anchor.dtype)
        emb.lm = self.embeddings.lm  # the same parameter object
        sib.embeddings = emb
        sib.adapter_path, sib.adapter_info = None, {}
        sib._refresh_fingerprint()
        return sib

    def trainable_parameters(self) -> dict[str, list[torch.nn.Parameter]]:
        """The parameters training updates: LoRA matrices and SAC embeddings (kept separate for their own learning rates)."""
        lora = [p for n, p in self.model.named_parameters() if "lora_" in n]
        emb = [p for p in (self.embeddings.anchor, self.embeddings.lm) if p.numel() > 0]
        return {"lora": lora, "embeddings": emb}

    def _adapter_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"emb.{k}": v for k, v in self.embeddings.state_dict().items()}
        if self._lora_layers:
            tensors.update({n: p for n, p in self.model.named_parameters() if "lora_" in n})
        return tensors

    def _refresh_fingerprint(self) -> None:
        """Recompute the fingerprint; call after changing adapter weights (training does)."""
        self.adapter_fingerprint = weights_fingerprint(self._adapter_tensors())
        self.fingerprint = sac_fingerprint(self.base_fingerprint, self.adapter_fingerprint, self.config)

    def _set_adapter(self, enabled: bool) -> None:
        # Flip the flag only: peft's enable_adapters() would also flip requires_grad, which training must keep.
        for layer in self._lora_layers:
            layer._disable_adapters = not enabled

    @contextlib.contextmanager
    def encoder_mode(self):
        """Hold the model lock with the LoRA adapter enabled."""
        with self._lock:
            self._set_adapter(True)
            try:
                yield
            finally:
                self._set_adapter(False)

    @contextlib.contextmanager
    def decoder_mode(self):
        """Hold the model lock with the adapter disabled: the frozen base model."""
        with self._lock:
            yield

    # ---- compression -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with this model's own tokenizer (no special tokens added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _passage_ids(self, text, index: int) -> list[int]:
        if not isinstance(text, str):
            raise InvalidInputError(f"passage {index} is a {type(text).__name__}, expected str")
        if not text.strip():
            raise InvalidInputError(f"passage {index} is empty or whitespace only")
        if "\x00" in text:
            raise InvalidInputError(f"passage {index} contains NUL characters (binary data?)")
        check_text(text, f"passage {index}")
        if len(text) > 16 * self.config.max_input_tokens:
            raise InputTooLargeError(f"passage {index} has {len(text)} characters, over the limit")
        ids = self.tokenize(self.config.template + text)
        if len(ids) > self.config.max_input_tokens:
            raise InputTooLargeError(
                f"passage {index} has {len(ids)} tokens; SACConfig.max_input_tokens is {self.config.max_input_tokens}"
            )
        return ids

    def compress(self, text: str) -> AnchorKV:
        """Compress one passage (split into sub-contexts as needed) into anchor KV."""
        return self.compress_batch([text])[0]

    #: Sub-contexts per encoder batch when none is given. With batches cut by length (no sub-context padded to
    #: more than 4/3 of its length) batches of 8 compressed ~14% faster than one at a time on the 2-core CPU
    #: (docs/benchmarks.md); without that cut, padding made them slower.
    default_batch_size: int = 8

    def compress_batch(self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False) -> list[AnchorKV]:
        """Compress passages, each on its own, batching their sub-contexts; same result as one by one.

        ``batch_size`` defaults to :attr:`default_batch_size`. Sub-contexts are batched by length, and one much
        shorter than the longest in its batch starts a new batch, so padding never doubles the work."""
        if isinstance(texts, (str, bytes, bytearray)) or not isinstance(texts, Sequence):
            raise InvalidInputError(f"compress_batch takes a list of strings, got {type(texts).__name__}")
        if batch_size is None:
            batch_size = self.default_batch_size
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be an int >= 1, got {batch_size!r}")
        token_lists = [self._passage_ids(t, i) for i, t in enumerate(texts)]
        with torch.inference_mode():
            kvs = self.encode_ids(token_lists, batch_size=batch_size, progress=progress)
        return [
            replace(kv, content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(), keys=kv.keys.clone(), values=kv.values.clone())
            for kv, text in zip(kvs, texts)
        ]

    def encode_ids(self, token_lists: Sequence[Sequence[int]], *, batch_size: int | None = None, progress: bool = False) -> list[AnchorKV]:
        """Encode already-tokenized passages (template included). Differentiable when grad is enabled (training)."""
        items = []  # (passage index, ChunkInput)
        for p, ids in enumerate(token_lists):
            for chunk in plan_chunks(self.config, len(ids)):
                items.append((p, ChunkInput(list(ids[chunk.start : chunk.start + chunk.length]), chunk)))
        batch_size = batch_size or self.default_batch_size
        order = sorted(range(len(items)), key=lambda i: -items[i][1].chunk.length)  # similar lengths share a batch
        results: list = [None] * len(items)
        batches = _length_batches(order, [items[i][1].chunk.length for i in range(len(items))], batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="compressing", unit="batch")
        with self.encoder_mode():
            for batch in batches:
                out = encode_chunks(
                    self.model, self.embeddings, self.masks, self.config, self.bos_id, self.pad_id, [items[i][1] for i in batch]
                )
                for i, kv in zip(batch, out):
                    results[i] = kv
        by_passage: list[list[int]] = [[] for _ in token_lists]
        for i, (p, _) in enumerate(items):
            by_passage[p].append(i)
        kvs = []
        for p, mine in enumerate(by_passage):
            kvs.append(
                AnchorKV(
                    keys=torch.cat([results[i][0] for i in mine], dim=2),
                    values=torch.cat([results[i][1] for i in mine], dim=2),
                    positions=torch.tensor([pos for i in mine for pos in items[i][1].chunk.anchor_positions], dtype=torch.long),
                    num_tokens=len(token_lists[p]),
                    fingerprint=self.fingerprint,
                    content_hash="",
                    rotary=self.rotary,
                )
            )
        return kvs

    def check_kv(self, kv: AnchorKV, content_hash: str | None = None) -> None:
        """Raise unless ``kv`` is what this model would compress for a passage: fingerprint, shape, anchor
        positions, rotary table and finite values. A stored file can pass its checksum and still be wrong
        (written by another program, or forged); this is checked before such a KV is read."""
        if not isinstance(kv, AnchorKV):
            raise InvalidInputError(f"expected an AnchorKV, got {type(kv).__name__}")
        if kv.fingerprint != self.fingerprint:
            raise KVMismatchError(f"KV compressed by {kv.fingerprint}, this model is {self.fingerprint}: recompress the passage")
        if content_hash is not None and kv.content_hash != content_hash:
            raise CorruptKVError(f"KV stands for passage {kv.content_hash[:12]}, not {content_hash[:12]}")
        cfg = self.base_model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        want = (len(self.masks.layer_types), heads, kv.num_anchors, head_dim)
        if tuple(kv.keys.shape) != want:
            raise CorruptKVError(f"KV of shape {tuple(kv.keys.shape)}; this model makes {want}")
        if kv.start != 0 or not 0 < kv.num_tokens <= self.config.max_input_tokens:
            raise CorruptKVError(f"KV claims start {kv.start} and {kv.num_tokens} tokens")
        planned = [p for chunk in plan_chunks(self.config, kv.num_tokens) for p in chunk.anchor_positions]
        if kv.positions.tolist() != planned:
            raise CorruptKVError(f"KV anchor positions do not match {kv.num_tokens} tokens at ratio {self.config.ratio}")
        same = [(kv.rotary.inv_freq, self.rotary.inv_freq), (kv.rotary.layer_type, self.rotary.layer_type)]
        if not all(a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) for a, b in same):
            raise CorruptKVError("KV rotary table differs from this model's")
        if not (torch.isfinite(kv.keys).all() and torch.isfinite(kv.values).all()):
            raise CorruptKVError("KV holds non-finite values")

    # ---- generation --------------------------------------------------------------------------
    def _context(self) -> DecoderContext:
        return DecoderContext(
            model=self.model,
            tokenizer=self.tokenizer,
            config=self.config,
            masks=self.masks,
            lm_embedding=self.embeddings.lm.detach() if self.config.lm_token else None,
            fingerprint=self.fingerprint,
            bos_id=self.bos_id,
            eos_ids=self.eos_ids,
            decoder_mode=self.decoder_mode,
            bos_cache=self._bos_cache,
        )

    def generate(
        self,
        segments: Sequence[str | AnchorKV],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        ground: Sequence[str] | None = None,
        end_bias: float = 0.0,
    ) -> GenerationOutput:
        """Decode from text segments and AnchorKVs, in order, with the frozen base model.

        ``ground``: passage texts the answer must be a span of (extractive QA; see :mod:`sac_rag.grounding`);
        the output's ``span`` says which passage and where. The decoder still reads only ``segments``.
        ``end_bias`` (grounded only): added to the logits of ending when the model chooses whether to end;
        below 0, longer answers."""
        params = SamplingParams(max_new_tokens, temperature, top_p, seed, stop or ())
        if ground is not None:
            return generate_grounded(self._context(), segments, ground, params, end_bias=end_bias)
        _no_end_bias(end_bias)
        return generate(self._context(), segments, params)

    def stream(
        self,
        segments: Sequence[str | AnchorKV],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        ground: Sequence[str] | None = None,
        end_bias: float = 0.0,
    ) -> Iterator[StreamPiece]:
        """Like :meth:`generate`, yielding text pieces; the last piece carries ``usage`` and ``finish_reason``.

        With ``ground`` the answer is known only once it is whole (it is a passage's span): one text piece."""
        params = SamplingParams(max_new_tokens, temperature, top_p, seed, stop or ())
        if ground is not None:
            return _grounded_pieces(generate_grounded(self._context(), segments, ground, params, end_bias=end_bias))
        _no_end_bias(end_bias)
        return stream(self._context(), segments, params)

    def qa_segments(self, question: str, kvs: Sequence[AnchorKV]) -> list[str | AnchorKV]:
        """The trained prompt layout: compressed passages, then the question template."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInputError("question must be a non-empty string")
        check_text(question, "question")
        if isinstance(kvs, (str, bytes, AnchorKV)) or not isinstance(kvs, Sequence) or not all(isinstance(kv, AnchorKV) for kv in kvs):
            raise InvalidInputError("qa_segments takes a question and a list of AnchorKV")
        return [*kvs, QA_TEMPLATE.format(question=question.strip())]

    def answer(self, question: str, passages: Sequence[str] | str, *, max_new_tokens: int = 32, grounded: bool = False,
               order: str = "as_given", scores: Sequence[float] | None = None, **kwargs) -> GenerationOutput:
        """Compress ``passages`` and answer ``question`` with the template the adapter was trained on.

        ``grounded=True``: the answer is a span of one of the passages (``output.span`` gives which and where,
        indexed in ``passages`` as given). ``order``: where the passages go in the prompt (``sac_rag.ordering``);
        ``"most_relevant_last"`` puts the most relevant one nearest the question, the order the shipped 5x adapter
        is trained for, ranking by ``scores`` (higher: more relevant) or, without them, taking ``passages`` as
        ranked best first, as retrievers return them. The default keeps ``passages`` as given."""
        if isinstance(passages, str):
            passages = [passages]
        if passages is not None and (isinstance(passages, (bytes, bytearray)) or not isinstance(passages, Sequence)):
            raise InvalidInputError(f"passages must be a string or a list of strings, got {type(passages).__name__}")
        passages = list(passages or [])
        placed = prompt_order(len(passages), scores, order)  # checks order and scores
        self.qa_segments(question, [])  # check the question before compressing anything
        in_prompt = [passages[i] for i in placed]
        kvs = self.compress_batch(in_prompt) if in_prompt else []
        kwargs.setdefault("stop", ["\n"])
        if grounded:
            if not passages:
                raise InvalidInputError("grounded=True needs passages to take the answer from")
            kwargs["ground"] = in_prompt
        out = self.generate(self.qa_segments(question, kvs), max_new_tokens=max_new_tokens, **kwargs)
        if out.span is not None:  # the caller's index, not the prompt's
            out = replace(out, span=replace(out.span, passage=placed[out.span.passage]))
        return out

    def __repr__(self) -> str:
        state = "trained" if self.trained else "untrained"
        return f"SACModel(source={self.source!r}, ratio={self.config.ratio}, adapter={state}, device={self.device}, dtype={self.dtype})"
