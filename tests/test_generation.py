"""Decoding from text and AnchorKV segments: exactness, Gemma 3's window, stop/stream/sampling, accounting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers import EXACT, TINY, text_of_length
from sac_rag import AnchorKV, GenerationOutput, SACConfig, SACModel, StreamPiece, Usage
from sac_rag.generation import _prefill

CONTEXT = "Anchors keep what a sub-context says. The decoder reads them like a KV cache. "
QUESTION = "\nQuestion: what does the decoder read?\nAnswer:"


def logits_of(sac: SACModel, segments) -> torch.Tensor:
    """The decoder's next-token logits after the prompt ``segments``."""
    with torch.inference_mode():
        return _prefill(sac._context(), segments).logits.clone()


def reference_generate(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """The base model's own greedy decoding, EOS and what follows removed."""
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=1, pad_token_id=0
        )[0, len(ids) :].tolist()
    return out[: out.index(1)] if 1 in out else out


def reference_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0, -1].float()


# ---- exactness of the plumbing -----------------------------------------------------------------


@pytest.mark.parametrize("lora_rank", [0, 16], ids=["no-lora", "default-lora"])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_config_decodes_like_the_base_model(make_sac, arch, lora_rank, seed):
    """ratio 1, causal, no learned vectors, no header: compress + generate == the model's own generate."""
    sac = make_sac(arch, seed=seed, **{**EXACT, "lora_rank": lora_rank})
    assert bool(sac._lora_layers) == (lora_rank > 0)
    kv = sac.compress(CONTEXT)
    assert kv.num_anchors == kv.num_tokens == len(sac.tokenize(CONTEXT)) < sac.config.chunk_tokens
    ids = [sac.bos_id] + sac.tokenize(CONTEXT) + sac.tokenize(QUESTION)
    reference = TINY[arch](seed)
    out = sac.generate([kv, QUESTION], max_new_tokens=24)
    assert out.token_ids == reference_generate(reference, ids, 24)
    assert torch.allclose(logits_of(sac, [kv, QUESTION]), reference_logits(reference, ids), atol=1e-4)


def test_exact_config_with_text_only_prompt(make_sac, arch):
    sac = make_sac(arch, **EXACT)
    reference = TINY[arch](0)
    ids = [sac.bos_id] + sac.tokenize(CONTEXT + QUESTION)
    assert sac.generate([CONTEXT + QUESTION], max_new_tokens=16).token_ids == reference_generate(reference, ids, 16)
    # Text split over several segments is the same prompt.
    assert torch.allclose(logits_of(sac, [CONTEXT, QUESTION]), reference_logits(reference, ids), atol=1e-4)


def test_text_after_a_leading_bos_is_not_doubled(make_sac):
    sac = make_sac("llama", **EXACT)
    a = logits_of(sac, ["<bos>" + CONTEXT])
    b = logits_of(sac, [CONTEXT])
    assert torch.allclose(a, b, atol=1e-5)


def test_exact_config_holds_with_trained_looking_lora(make_sac, arch):
    """LoRA is the encoder's only: with ratio 1 causal, a non-zero LoRA changes the KV, hence the logits."""
    sac = make_sac(arch, **{**EXACT, "lora_rank": 4})
    kv_fresh = sac.compress(CONTEXT)
    with torch.no_grad():
        for name, p in sac.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    sac._refresh_fingerprint()
    kv_lora = sac.compress(CONTEXT)
    ids = [sac.bos_id] + sac.tokenize(CONTEXT + QUESTION)
    ref = reference_logits(TINY[arch](0), ids)
    assert not torch.allclose(logits_of(sac, [kv_lora, QUESTION]), ref, atol=1e-3)
    # ...while the text-only prompt still decodes with the frozen base model.
    assert torch.allclose(logits_of(sac, [CONTEXT + QUESTION]), ref, atol=1e-4)
    assert kv_fresh.fingerprint != kv_lora.fingerprint


# ---- layout equivalences ------------------------------------------------------------------------


def test_a_run_of_kvs_equals_their_concatenation(make_sac, arch):
    sac = make_sac(arch, ratio=3)
    kv_a, kv_b = sac.compress_batch([text_of_length(90, 1), text_of_length(140, 2)])
    joined = AnchorKV.concat([kv_a, kv_b])
    for prefix in ([], ["Some instructions first. "]):
        a = logits_of(sac, [*prefix, kv_a, kv_b, QUESTION])
        b = logits_of(sac, [*prefix, joined, QUESTION])
        assert torch.allclose(a, b, atol=1e-5)


def test_reused_bos_kv_changes_nothing(make_sac, arch):
    """A prompt opening with a KV segment reuses the BOS sink's stored KV instead of a forward pass of its own:
    the logits are exactly those of running BOS through the model, and the entry is computed once."""
    sac = make_sac(arch, ratio=3)
    kv = sac.compress(text_of_length(90, 1))
    with torch.inference_mode():
        fresh = dataclasses.replace(sac._context(), bos_cache=None)  # no reuse: BOS runs every time
        ref = _prefill(fresh, [kv, QUESTION]).logits.clone()
    assert not sac._bos_cache
    assert torch.equal(logits_of(sac, [kv, QUESTION]), ref)
    assert len(sac._bos_cache) == 1
    stored = sac._bos_cache[next(iter(sac._bos_cache))]
    assert len(stored) == len(sac.masks.layer_types) and all(k.shape[-2] == 1 for k, _ in stored)
    assert torch.equal(logits_of(sac, [kv, QUESTION]), ref)  # from the stored entry, untouched by the first use
    assert torch.equal(logits_of(sac, [kv, QUESTION]), ref)


def test_stored_start_does_not_matter(make_sac, arch):
    """Generation places every KV where it lands in the prompt, wherever it was stored."""
    sac = make_sac(arch, ratio=4)
    kv = sac.compress(text_of_length(120))
    for prefix in ([], ["A prefix of some length. "]):
        base = logits_of(sac, [*prefix, kv, QUESTION])
        assert torch.allclose(logits_of(sac, [*prefix, kv.placed_at(333), QUESTION]), base, atol=1e-4)


def test_lm_embedding_is_read_only_when_enabled(make_sac):
    for lm_token in (True, False):
        sac = make_sac("llama", ratio=4, lm_token=lm_token)
        kv = sac.compress(text_of_length(60))
        before = logits_of(sac, [kv, QUESTION])
        text_only = logits_of(sac, [CONTEXT, QUESTION])
        with torch.no_grad():
            sac.embeddings.lm.add_(torch.randn_like(sac.embeddings.lm) * 2)
        after = logits_of(sac, [kv, QUESTION])
        assert torch.equal(logits_of(sac, [CONTEXT, QUESTION]), text_only)
        assert (not torch.allclose(before, after, atol=1e-4)) == lm_token


@pytest.mark.parametrize("count", [1, 3])
def test_lm_vectors_sit_after_the_kv_in_order(make_sac, arch, count):
    """With ``lm_tokens=k`` the decoder reads, after a run of KVs, the k learned vectors in order: the first at the
    last compressed token's position, the others at the positions after it, and the text after them. Checked
    against the base model fed those embeddings and positions by hand (under the exact config a KV is the base
    model's own cache of its text)."""
    sac = make_sac(arch, **{**EXACT, "lm_token": True, "lm_tokens": count})
    hidden = sac.model.config.hidden_size
    assert sac.embeddings.lm.shape == ((hidden,) if count == 1 else (count, hidden))
    with torch.no_grad():
        sac.embeddings.lm.normal_()  # vectors far from any token's, so a misplaced or reordered one shows
    kv = sac.compress(CONTEXT)
    ctx_ids, q_ids = sac.tokenize(CONTEXT), sac.tokenize(QUESTION)
    n = len(ctx_ids)
    reference = TINY[arch](0)
    embed = reference.get_input_embeddings()
    lm = sac.embeddings.lm.detach().reshape(count, -1)
    with torch.inference_mode():
        embeds = torch.cat([embed(torch.tensor([sac.bos_id] + ctx_ids)), lm.to(embed.weight.dtype), embed(torch.tensor(q_ids))])
        pos = list(range(n + 1)) + list(range(n, n + count)) + list(range(n + count, n + count + len(q_ids)))
        want = reference(inputs_embeds=embeds[None], position_ids=torch.tensor([pos])).logits[0, -1].float()
    assert torch.allclose(logits_of(sac, [kv, QUESTION]), want, atol=1e-4)
    # generation starts from those logits; the [LM] vectors are not counted as prompt text
    out = sac.generate([kv, QUESTION], max_new_tokens=2)
    assert out.token_ids[0] == int(want.argmax())
    assert out.usage.prompt_tokens == 1 + len(q_ids) and out.usage.anchors == n
    if count > 1:  # the order matters: swapped vectors give another answer
        with torch.no_grad():
            sac.embeddings.lm.copy_(sac.embeddings.lm.flip(0))
        assert not torch.allclose(logits_of(sac, [kv, QUESTION]), want, atol=1e-3)


def test_kv_alone_is_a_valid_prompt_with_lm_token(make_sac):
    sac = make_sac("llama", ratio=4, lm_token=True)
    out = sac.generate([sac.compress(CONTEXT)], max_new_tokens=3)
    assert len(out.token_ids) <= 3 and out.usage.prompt_tokens == 1


# ---- Gemma 3: sliding window vs anchors -----------------------------------------------------------


@pytest.fixture
def gemma_all_anchors(make_sac):
    """Tiny Gemma 3 (window 512), every token an anchor; two passages: 600 anchors before the question."""
    sac = make_sac("gemma3", ratio=1, template="")
    assert sac.masks.window == 512
    first = "".join(chr(97 + (i * 7) % 26) for i in range(300))
    second = "".join(chr(65 + (i * 5) % 26) for i in range(300))
    kv1, kv2 = sac.compress_batch([first, second])
    assert kv1.num_anchors + kv2.num_anchors == 600 > 512
    return sac, first, kv1, kv2


def test_more_than_512_anchors_first_passage_matters(gemma_all_anchors):
    sac, first, kv1, kv2 = gemma_all_anchors
    question = "What came first?"
    base = logits_of(sac, [kv1, kv2, question])
    other_first = sac.compress("Z" + first[1:])
    assert (logits_of(sac, [other_first, kv2, question]) - base).abs().max() > 1e-3


def test_more_than_512_anchors_sliding_layers_see_the_first_anchor(gemma_all_anchors):
    """Perturb the first anchor only in the sliding-window layers: the output still changes,
    so those layers read an anchor about 600 positions back (beyond their 512 window)."""
    sac, _, kv1, kv2 = gemma_all_anchors
    question = "What came first?"
    sliding = torch.tensor([t == "sliding_attention" for t in sac.masks.layer_types])
    assert sliding.any() and not sliding.all()
    gen = torch.Generator().manual_seed(0)
    keys, values = kv1.keys.clone(), kv1.values.clone()
    keys[sliding, :, 0] += 3 * torch.randn(keys[sliding, :, 0].shape, generator=gen)
    values[sliding, :, 0] += 3 * torch.randn(values[sliding, :, 0].shape, generator=gen)
    perturbed = dataclasses.replace(kv1, keys=keys, values=values)
    base = logits_of(sac, [kv1, kv2, question])
    assert (logits_of(sac, [perturbed, kv2, question]) - base).abs().max() > 1e-3
    # The anchor sits farther back than the window from every query position.
    assert int(kv1.positions[0]) + 512 < kv1.num_tokens + kv2.num_tokens


def test_text_beyond_the_window_decodes_like_the_base_model(make_sac):
    """Plain text keeps Gemma 3's own sliding window: logits and tokens equal the model's own."""
    sac = make_sac("gemma3", ratio=1)
    text = "".join(chr(33 + (i * 13) % 90) for i in range(700))
    ids = [sac.bos_id] + sac.tokenize(text)
    reference = TINY["gemma3"](0)
    ours = logits_of(sac, [text])
    assert torch.allclose(ours, reference_logits(reference, ids), atol=1e-4)
    # The window does matter here: without it the logits differ.
    unwindowed = reference_logits(TINY["gemma3"](0, sliding_window=4096), ids)
    assert (ours - unwindowed).abs().max() > 1e-3
    assert sac.generate([text], max_new_tokens=6).token_ids == reference_generate(reference, ids, 6)


# ---- stop strings, streaming, sampling, limits -------------------------------------------------------


@pytest.fixture
def llama(make_sac):
    sac = make_sac("llama", seed=1, ratio=5)
    kv = sac.compress(CONTEXT)
    return sac, kv


def ascii_stop_candidates(text: str) -> list[tuple[int, str]]:
    """(first index, 2-char string) pairs of printable ASCII in ``text``, first occurrence at index >= 2."""
    out = []
    for i in range(2, len(text) - 1):
        s = text[i : i + 2]
        if all(32 <= ord(c) < 127 for c in s) and text.find(s) == i:
            out.append((i, s))
    return out


def test_stop_strings_are_not_emitted(llama):
    sac, kv = llama
    full = sac.generate([kv, QUESTION], max_new_tokens=40)
    assert full.finish_reason == "length"
    candidates = ascii_stop_candidates(full.text)
    assert candidates, f"the tiny model's output has no ASCII pair to stop at: {full.text!r}"
    for index, stop in candidates[:3]:
        out = sac.generate([kv, QUESTION], max_new_tokens=40, stop=stop)
        assert out.finish_reason == "stop"
        assert stop not in out.text
        assert out.text == full.text[:index]
        assert out.token_ids == full.token_ids[: len(out.token_ids)]
        streamed = list(sac.stream([kv, QUESTION], max_new_tokens=40, stop=[stop, "never appears"]))
        assert "".join(p.text for p in streamed) == out.text
        assert all(stop not in p.text for p in streamed)
        assert streamed[-1].finish_reason == "stop"


def test_stop_string_that_never_appears(llama):
    sac, kv = llama
    full = sac.generate([kv, QUESTION], max_new_tokens=20)
    out = sac.generate([kv, QUESTION], max_new_tokens=20, stop=["\x00never\x00"])
    assert (out.text, out.token_ids, out.finish_reason) == (full.text, full.token_ids, full.finish_reason)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stream_pieces_join_to_generate_text(make_sac, arch, seed):
    sac = make_sac(arch, seed=seed, ratio=5)
    kv = sac.compress(CONTEXT)
    for kwargs in ({}, {"stop": "e"}, {"temperature": 1.0, "seed": 5}):
        out = sac.generate([kv, QUESTION], max_new_tokens=30, **kwargs)
        pieces = list(sac.stream([kv, QUESTION], max_new_tokens=30, **kwargs))
        assert all(isinstance(p, StreamPiece) for p in pieces)
        assert "".join(p.text for p in pieces) == "".join(str(p) for p in pieces) == out.text
        last = pieces[-1]
        assert last.finish_reason == out.finish_reason and last.usage == out.usage
        assert list(last.token_ids) == out.token_ids
        assert all(p.usage is None and p.finish_reason is None for p in pieces[:-1])
        if out.finish_reason != "stop":
            assert out.text == sac.tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_sampling_is_reproducible_with_a_seed(llama):
    sac, kv = llama
    runs = [sac.generate([kv, QUESTION], max_new_tokens=20, temperature=1.0, seed=s).token_ids for s in (7, 7, 8, 9, 10)]
    assert runs[0] == runs[1]
    assert len({tuple(r) for r in runs}) > 1, "different seeds give different samples"
    for r in runs:
        assert 0 < len(r) <= 20


def test_sampling_runs_with_temperature_and_top_p(llama):
    sac, kv = llama
    greedy = sac.generate([kv, QUESTION], max_new_tokens=15).token_ids
    # top_p so small that only the most likely token survives: sampling becomes greedy.
    assert sac.generate([kv, QUESTION], max_new_tokens=15, temperature=0.7, top_p=1e-6, seed=1).token_ids == greedy
    hot = sac.generate([kv, QUESTION], max_new_tokens=15, temperature=2.5, top_p=0.9, seed=3)
    assert hot.finish_reason in ("eos", "length", "stop") and len(hot.token_ids) <= 15
    assert all(0 <= t < 259 for t in hot.token_ids)


@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_max_new_tokens_is_respected(llama, n):
    sac, kv = llama
    out = sac.generate([kv, QUESTION], max_new_tokens=n)
    assert len(out.token_ids) <= n
    assert out.usage.generated_tokens == len(out.token_ids)
    if out.finish_reason == "length":
        assert len(out.token_ids) == n
    longer = sac.generate([kv, QUESTION], max_new_tokens=n + 5)
    assert longer.token_ids[: len(out.token_ids)] == out.token_ids


def test_eos_ends_generation(tok):
    """An EOS id from the model's generation config ends decoding; it is not part of the output."""
    probe = SACModel.from_model(TINY["llama"](1), tok, SACConfig(ratio=5))
    greedy = probe.generate([CONTEXT], max_new_tokens=12).token_ids
    stop_token = greedy[3]
    cut = greedy.index(stop_token)
    model = TINY["llama"](1)
    model.generation_config.eos_token_id = [1, stop_token]
    sac = SACModel.from_model(model, tok, SACConfig(ratio=5))
    assert stop_token in sac.eos_ids
    out = sac.generate([CONTEXT], max_new_tokens=12)
    assert out.finish_reason == "eos"
    assert out.token_ids == greedy[:cut]
    assert out.usage.generated_tokens == cut


def test_generate_does_not_mutate_stored_kv(make_sac, arch):
    sac = make_sac(arch, ratio=3)
    kv, kv2 = sac.compress_batch([text_of_length(100), text_of_length(600, 3)])
    saved = [(k.keys.clone(), k.values.clone(), k.positions.clone(), k.start) for k in (kv, kv2)]
    layouts = [[kv, QUESTION], ["Preface. ", kv, QUESTION], [kv, kv2, QUESTION], [kv2, "middle", kv, QUESTION], [kv, kv, "q"]]
    for segments in layouts:
        sac.generate(segments, max_new_tokens=4)
        list(sac.stream(segments, max_new_tokens=4, temperature=1.0, seed=0))
    for k, (keys, values, positions, start) in zip((kv, kv2), saved):
        assert torch.equal(k.keys, keys) and torch.equal(k.values, values)
        assert torch.equal(k.positions, positions) and k.start == start
    # And decoding twice from the same KV gives the same answer.
    assert sac.generate([kv, QUESTION], max_new_tokens=6) == sac.generate([kv, QUESTION], max_new_tokens=6)


def test_usage_counts(make_sac):
    sac = make_sac("llama", ratio=5)
    texts = [text_of_length(80), text_of_length(700, 1), text_of_length(33, 2)]
    kvs = sac.compress_batch(texts)
    segments = ["Use the passages. ", kvs[0], kvs[1], "and also", kvs[2], QUESTION]
    out = sac.generate(segments, max_new_tokens=9)
    assert isinstance(out, GenerationOutput) and isinstance(out.usage, Usage)
    u = out.usage
    assert u.anchors == sum(k.num_anchors for k in kvs)
    assert u.context_tokens == sum(k.num_tokens for k in kvs)
    text_tokens = sum(len(sac.tokenize(s)) for s in segments if isinstance(s, str))
    assert u.prompt_tokens == 1 + text_tokens  # BOS + text
    assert u.generated_tokens == len(out.token_ids)
    assert u.total_tokens == u.prompt_tokens + u.anchors + u.generated_tokens
    assert u.to_dict() == {
        "prompt_tokens": u.prompt_tokens,
        "anchors": u.anchors,
        "context_tokens": u.context_tokens,
        "generated_tokens": u.generated_tokens,
        "total_tokens": u.total_tokens,
    }
    answer = sac.answer("what?", texts, max_new_tokens=4)
    assert answer.usage.anchors == u.anchors and answer.usage.context_tokens == u.context_tokens
    assert "\n" not in answer.text


def test_reused_bos_kv_from_inference_does_not_break_training(make_sac):
    """A KV-first prompt decoded under inference_mode, then a differentiable one (training): no inference tensor
    reaches the autograd graph, and gradients flow to the encoder."""
    sac = make_sac("llama", ratio=3)
    text = text_of_length(60, 3)
    logits_of(sac, [sac.compress(text), QUESTION])  # fills the inference-mode entry
    ids = [sac.tokenize(sac.config.template + text)]
    kv = sac.encode_ids(ids, batch_size=1)[0]  # grad enabled: differentiable
    state = _prefill(sac._context(), [kv, QUESTION], keep=1)
    state.logits.float().logsumexp(-1).backward()
    assert sac.embeddings.anchor.grad is not None and torch.isfinite(sac.embeddings.anchor.grad).all()


# ---- batched teacher forcing (training) --------------------------------------------------------


@pytest.mark.parametrize("lm_tokens", [1, 3], ids=["one-lm", "three-lm"])
@pytest.mark.parametrize("window", [512, 6], ids=["wide", "narrow-window"])
def test_batched_prefill_matches_one_prompt_at_a_time(make_sac, arch, window, lm_tokens):
    """_prefill_batch (training: every query of an item in one pass) gives each prompt the logits _prefill gives it
    alone: text before and between KVs, KVs of different sizes (padding), prompts of different lengths, a prompt
    without KVs; on Gemma 3 also with a window narrower than the prompts (anchors stay visible, text does not);
    with one [LM] vector and with several."""
    from sac_rag.generation import _prefill_batch

    sac = make_sac(arch, model_kwargs={"sliding_window": window} if arch == "gemma3" else None, ratio=4, lora_rank=4,
                   lm_tokens=lm_tokens)
    with torch.no_grad():
        sac.embeddings.lm.normal_()  # a visible [LM] vector, so a misplaced one would show
    ctx = sac._context()
    a, b = sac.compress(CONTEXT), sac.compress("A second, shorter passage.")
    target = sac.tokenize(" the anchors")
    prompts = [
        [a, QUESTION, target],
        ["Context:\n", b, "\n\n", a, QUESTION, target],
        [b, "Q?", target[:3]],
        ["No passages here at all, only a question?", target],
    ]
    keep = [len(target) + 1, len(target) + 1, 4, 2]
    with torch.no_grad():
        batched = _prefill_batch(ctx, prompts, keep)
        for prompt, k, got in zip(prompts, keep, batched):
            alone = _prefill(ctx, prompt, keep=k).logits
            assert got.shape == alone.shape
            assert torch.allclose(got, alone, atol=1e-4), (got - alone).abs().max()


def test_batched_prefill_gradients_match(make_sac):
    """The loss through _prefill_batch sends the anchor embedding and the [LM] vector the same gradients as the loss
    summed over prompts fed one at a time (what training needs from it)."""
    from sac_rag.generation import _prefill_batch

    sac = make_sac("gemma3", ratio=4, lora_rank=4)
    groups = sac.trainable_parameters()
    params = groups["lora"] + groups["embeddings"]
    with torch.no_grad():
        for p in groups["lora"]:
            p.normal_(0, 0.1)  # a trained-looking LoRA (a fresh one has B = 0, so A would get no gradient)
    for p in params:
        p.requires_grad_(True)
    target = sac.tokenize(" the anchors")
    grads = []
    for batched in (True, False):
        ctx = sac._context()
        ctx.lm_embedding = sac.embeddings.lm
        kvs = sac.encode_ids([sac.tokenize(CONTEXT), sac.tokenize("A second, shorter passage.")])
        prompts = [[kvs[0], QUESTION, target], ["Context:\n", kvs[1], "\n", kvs[0], QUESTION, target]]
        if batched:
            rows = _prefill_batch(ctx, prompts, [len(target) + 1] * 2)
        else:
            rows = [_prefill(ctx, p, keep=len(target) + 1).logits for p in prompts]
        loss = sum(torch.nn.functional.cross_entropy(r[:-1], torch.tensor(target)) for r in rows)
        loss.backward()
        grads.append([None if p.grad is None else p.grad.clone() for p in params])
        for p in params:
            p.grad = None
    assert [g is None for g in grads[0]] == [g is None for g in grads[1]]
    reached = [(gb, ga) for gb, ga in zip(*grads) if gb is not None]
    assert len(reached) >= len(params) // 2 and sac.embeddings.lm.grad is None  # reset above
    for g_batched, g_alone in reached:
        assert g_batched.abs().sum() > 0
        assert torch.allclose(g_batched, g_alone, atol=1e-5, rtol=1e-3)


def test_batched_prefill_refuses_bad_keep(make_sac):
    from sac_rag.errors import InvalidInputError
    from sac_rag.generation import _prefill_batch

    sac = make_sac("llama", ratio=4)
    kv = sac.compress(CONTEXT)
    with pytest.raises(InvalidInputError, match="one keep count per prompt"):
        _prefill_batch(sac._context(), [[kv, "Q?"]], [1, 1])
    with pytest.raises(InvalidInputError, match="keep must be in"):  # BOS + [LM] + 2 tokens: at most 4 rows
        _prefill_batch(sac._context(), [[kv, "Q?"]], [5])
