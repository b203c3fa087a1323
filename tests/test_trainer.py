"""The training loop on a tiny saved model: log, checkpoint, adapter, resume, init_adapter; a loss that goes down."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file

from helpers import save_tiny_base, tiny_train_config, write_squad
from sac_rag import SACConfig, SACModel
from sac_rag.testing import byte_tokenizer, tiny_llama
from sac_rag.training import trainer as trainer_mod
from sac_rag.training.tasks import TrainItem, build_prompt
from sac_rag.training.trainer import TrainConfig, item_loss, item_stream, train

# train() starts from an untrained adapter on a non-embedded model and says so.
pytestmark = pytest.mark.filterwarnings("ignore:SACModel. no trained adapter:UserWarning")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.json"
    write_squad(path)
    return str(path)


def config(base: str, data: str, out, **kw) -> TrainConfig:
    return tiny_train_config(base, data, out, **kw)


def load(base: str, adapter=None, cfg: TrainConfig | None = None) -> SACModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-adapter warning
        if adapter is None:
            return SACModel.from_pretrained(base, adapter=None, config=cfg.sac_config(), dtype="float32")
        return SACModel.from_pretrained(base, adapter=str(adapter), dtype="float32")


def log_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]


def record_items(monkeypatch) -> list[TrainItem]:
    """Every item the loop computes a loss on, in order."""
    seen: list[TrainItem] = []
    original = trainer_mod.item_loss

    def spy(sac, item, cfg, *rest):
        seen.append(item)
        return original(sac, item, cfg, *rest)

    monkeypatch.setattr(trainer_mod, "item_loss", spy)
    return seen


def test_train_resume_and_init_adapter(base, data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    seen = record_items(monkeypatch)
    cfg = config(base, data, out)
    adapter = train(cfg, progress=False)
    assert adapter == out / "latest" / "adapter"

    # the log: one line per step, finite losses
    lines = log_lines(out)
    assert [r["step"] for r in lines] == [1, 2]
    assert [r["items"] for r in lines] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and math.isfinite(r["grad_norm"]) for r in lines)
    assert all(r["stage"] == "qa" for r in lines)
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["step"] == 2 and state["items"] == 2 and state["tokens"] > 0
    assert (out / "latest" / "optimizer.safetensors").exists()
    assert json.loads((out / "train_config.json").read_text())["steps"] == 2

    # the adapter loads on the base model and is not the untrained one
    trained = load(base, adapter)
    untrained = load(base, cfg=cfg)
    assert trained.config == cfg.sac_config()
    assert trained.trained and trained.adapter_info["step"] == 2
    assert trained.fingerprint != untrained.fingerprint
    assert trained.base_fingerprint == untrained.base_fingerprint

    # resume: one more step, on the next item of the same stream, with the optimizer state carried over
    train(config(base, data, out, steps=3, resume=True), progress=False)
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["step"] == 3 and state["items"] == 3
    assert [r["items"] for r in log_lines(out)] == [1, 2, 3]
    assert seen == list(itertools.islice(item_stream(cfg), 3))
    opt = load_file(out / "latest" / "optimizer.safetensors")
    steps = {k: v for k, v in opt.items() if k.endswith(".step")}
    assert steps and all(float(v) == 3 for v in steps.values())  # 2 steps restored + 1, not a fresh optimizer
    assert any(k.endswith(".exp_avg") for k in opt) and any(k.endswith(".exp_avg_sq") for k in opt)
    resumed = load(base, out / "latest" / "adapter")
    assert resumed.fingerprint != trained.fingerprint

    # checkpoint gone + init_adapter: a fresh run starts from that adapter (lr 0 keeps its weights as they are)
    init = tmp_path / "init-adapter"
    shutil.copytree(out / "latest" / "adapter", init)
    shutil.rmtree(out / "latest")
    seen.clear()
    train(config(base, data, out, steps=1, resume=True, init_adapter=str(init), lr=0.0, emb_lr=0.0), progress=False)
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["step"] == 1 and state["items"] == 1
    assert seen == list(itertools.islice(item_stream(cfg), 1))  # the stream starts over
    restarted = load(base, out / "latest" / "adapter")
    assert restarted.adapter_fingerprint == resumed.adapter_fingerprint
    assert restarted.fingerprint == resumed.fingerprint != untrained.fingerprint
    # the restarted run records the training already in its init adapter (3 items), so curves continue from there
    assert restarted.adapter_info["before"]["items"] == 3 and restarted.adapter_info["before"]["tokens"] > 0
    assert restarted.adapter_info["recipe"] == config(base, data, out, lr=0.0, emb_lr=0.0).recipe()

    # a chain: a run from the restarted adapter counts both earlier runs
    again = train(config(base, data, tmp_path / "again", steps=1, init_adapter=str(out / "latest" / "adapter")),
                  progress=False)
    assert load(base, again).adapter_info["before"]["items"] == 4


def test_resume_false_starts_over(base, data, tmp_path):
    out = tmp_path / "run"
    train(config(base, data, out, steps=1), progress=False)
    train(config(base, data, out, steps=1, resume=False), progress=False)
    assert [r["step"] for r in log_lines(out)] == [1, 1]  # appended, counted from 0 again
    assert json.loads((out / "latest" / "state.json").read_text())["step"] == 1


def test_lm_stage_trains(base, data, tmp_path):
    long = " ".join(f"Sentence {i} of a long text about a topic, with several words." for i in range(20))
    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"question": "q?", "answers": ["a"], "passages": [long]}) + "\n", encoding="utf-8")
    out = tmp_path / "lm"
    train(config(base, data, out, stage="lm", text_data=(f"{path}:jsonl",), steps=2, grad_accum=2), progress=False)
    lines = log_lines(out)
    assert [r["items"] for r in lines] == [2, 4]  # grad_accum items per optimizer step
    assert all(r["stage"] == "lm" and math.isfinite(r["loss"]) for r in lines)
    assert json.loads((out / "latest" / "state.json").read_text())["items"] == 4


def test_init_adapter_from_another_ratio(base, data, tmp_path):
    """A 15x run may start from a 5x adapter: LoRA and [LM] copied, each anchor slot from the 5x slot at its position."""
    out = tmp_path / "run"
    src = train(config(base, data, out, steps=1, ratio=5), progress=False)
    five = load(base, src)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter = train(config(base, data, tmp_path / "x15", steps=1, ratio=15, init_adapter=str(src), lr=0.0,
                               emb_lr=0.0), progress=False)
    # the run fills its model from the 5x adapter: the users' "UNTRAINED adapter" warning would mislead its log
    assert not [w for w in caught if "UNTRAINED" in str(w.message)]
    fifteen = load(base, adapter)
    assert fifteen.config.ratio == 15 and fifteen.config.anchor_slots == 34
    # 15x anchors sit at 15j+7 in a sub-context, which is where 5x slot 3j+1 sits (5i+2)
    assert torch.equal(fifteen.embeddings.anchor, five.embeddings.anchor[1::3][:34])
    assert torch.equal(fifteen.embeddings.lm, five.embeddings.lm)
    lora5 = {n: p for n, p in five.model.named_parameters() if "lora_" in n}
    lora15 = {n: p for n, p in fifteen.model.named_parameters() if "lora_" in n}
    assert lora5.keys() == lora15.keys() and all(torch.equal(lora5[n], lora15[n]) for n in lora5)
    assert fifteen.trained
    assert fifteen.adapter_info["init"] == "qa x5 step 1"  # where the run started, kept in its checkpoints
    assert fifteen.adapter_info["before"] == {"items": 0, "tokens": 0, "elapsed_s": 0.0}  # 5x training is not 15x's


def test_init_adapter_must_match_beyond_ratio(base, data, tmp_path):
    from sac_rag import ConfigError

    adapter = train(config(base, data, tmp_path / "run", steps=1, ratio=5), progress=False)
    with pytest.raises(ConfigError, match="more than the ratio"):
        train(config(base, data, tmp_path / "other", steps=1, ratio=4, chunk_tokens=64, init_adapter=str(adapter)),
              progress=False)
    # a higher rank must keep the scaling (alpha / rank), and the error says which alpha does
    with pytest.raises(ConfigError, match="lora_alpha=64"):
        train(config(base, data, tmp_path / "wider", steps=1, lora_rank=8, init_adapter=str(adapter)), progress=False)
    # a lower rank would drop trained directions
    with pytest.raises(ConfigError, match="rank 4 does not fit"):
        train(config(base, data, tmp_path / "narrower", steps=1, lora_rank=2, lora_alpha=16, init_adapter=str(adapter)),
              progress=False)


def test_a_run_with_more_lm_vectors_than_its_init_adapter(base, data, tmp_path):
    """``lm_tokens=3`` from an adapter with one [LM] vector: the trained vector comes first and fills the added
    places, the LoRA and anchors are copied; training then moves each vector on its own; the adapter saves and
    loads with its three vectors, and a run with fewer vectors than its init adapter is refused."""
    from sac_rag import ConfigError

    src = train(config(base, data, tmp_path / "one", steps=1), progress=False)
    one = load(base, src)
    start = load(base, train(config(base, data, tmp_path / "copy", steps=1, lm_tokens=3, init_adapter=str(src), lr=0.0,
                                    emb_lr=0.0), progress=False))
    assert start.config.lm_tokens == 3 and start.embeddings.lm.shape == (3, one.embeddings.lm.shape[0])
    assert all(torch.equal(row, one.embeddings.lm) for row in start.embeddings.lm)
    assert torch.equal(start.embeddings.anchor, one.embeddings.anchor)
    cfg = config(base, data, tmp_path / "three", steps=3, lm_tokens=3, init_adapter=str(src))
    assert "3 [LM] vectors" in cfg.recipe()
    trained = load(base, train(cfg, progress=False))
    moved = trained.embeddings.lm - one.embeddings.lm
    assert all(row.abs().sum() > 0 for row in moved)
    assert not torch.allclose(moved[0], moved[1]) and not torch.allclose(moved[1], moved[2])  # each its own gradient
    with pytest.raises(ConfigError, match="3 \\[LM\\] vectors, more than this run's 1"):
        train(config(base, data, tmp_path / "fewer", steps=1, init_adapter=str(tmp_path / "three" / "latest" / "adapter")),
              progress=False)
    with pytest.raises(ConfigError, match="lm_tokens"):
        config(base, data, tmp_path / "bad", lm_tokens=0)
    with pytest.raises(ConfigError, match="sac method"):
        config(base, data, tmp_path / "ft", lm_tokens=2, method="full-ft")


def test_init_adapter_with_a_higher_lora_rank(base, data, tmp_path):
    """A run may grow the LoRA rank of its init adapter (alpha growing with it): the adapter's matrices fill the
    leading rows of A and columns of B, the added columns of B are zero, so the run starts from the adapter's loss."""
    src = train(config(base, data, tmp_path / "r4", steps=1), progress=False)
    before = load(base, src)
    cfg = config(base, data, tmp_path / "r8", steps=1, lora_rank=8, lora_alpha=64, init_adapter=str(src), lr=0.0, emb_lr=0.0)
    after = load(base, train(cfg, progress=False))
    assert (before.config.lora_rank, after.config.lora_rank) == (4, 8)
    small = {n: p for n, p in before.model.named_parameters() if "lora_" in n}
    big = {n: p for n, p in after.model.named_parameters() if "lora_" in n}
    assert small.keys() == big.keys()
    for n, p in small.items():
        if "lora_A" in n:
            assert big[n].shape == (8, p.shape[1]) and torch.equal(big[n][:4], p) and big[n][4:].any()
        else:
            assert big[n].shape == (p.shape[0], 8) and torch.equal(big[n][:, :4], p) and not big[n][:, 4:].any()
    item = next(item_stream(cfg))
    with torch.no_grad():
        loss_small, _ = item_loss(before, item, cfg, {}, None)
        loss_big, _ = item_loss(after, item, cfg, {}, None)
    assert torch.allclose(loss_small, loss_big, atol=1e-5)


def test_init_adapter_with_added_lora_targets(base, data, tmp_path):
    """A run may wrap more modules than its init adapter (say the MLP too): the adapter's LoRA, anchors and [LM]
    are copied, the added LoRA starts at zero, so the run starts from exactly the adapter's loss."""
    from sac_rag import ConfigError

    attn = ("q_proj", "k_proj", "v_proj", "o_proj")
    wide = attn + ("gate_proj", "up_proj", "down_proj")
    src = train(config(base, data, tmp_path / "attn", steps=1, lora_targets=attn), progress=False)
    before = load(base, src)
    cfg = config(base, data, tmp_path / "wide", steps=1, lora_targets=wide, init_adapter=str(src), lr=0.0, emb_lr=0.0)
    after = load(base, train(cfg, progress=False))
    assert after.config.lora_targets == wide and before.config.lora_targets == attn
    lora_a = {n: p for n, p in before.model.named_parameters() if "lora_" in n}
    lora_w = {n: p for n, p in after.model.named_parameters() if "lora_" in n}
    assert lora_a.keys() < lora_w.keys() and all(torch.equal(lora_a[n], lora_w[n]) for n in lora_a)
    added = [n for n in lora_w if n not in lora_a]
    assert any("mlp" in n for n in added)
    assert all(not lora_w[n].any() for n in added if "lora_B" in n)  # zero B: the added modules change nothing yet
    assert any(lora_w[n].any() for n in added if "lora_A" in n)  # A is random, so gradients reach B
    assert torch.equal(after.embeddings.anchor, before.embeddings.anchor) and torch.equal(after.embeddings.lm, before.embeddings.lm)
    item = next(item_stream(cfg))
    with torch.no_grad():
        loss_a, _ = item_loss(before, item, cfg, {}, None)
        loss_w, _ = item_loss(after, item, cfg, {}, None)
    assert torch.allclose(loss_a, loss_w, atol=1e-5)
    assert "rank 4 on q_proj/k_proj/v_proj/o_proj/gate_proj/up_proj/down_proj" in cfg.recipe()
    # the other way round would drop trained weights: refused, with the modules named
    with pytest.raises(ConfigError, match="gate_proj"):
        train(config(base, data, tmp_path / "narrow", steps=1, lora_targets=attn,
                     init_adapter=str(tmp_path / "wide" / "latest" / "adapter")), progress=False)


def test_batched_passage_encoding_gives_the_same_loss_and_gradients(tmp_path, monkeypatch):
    """``encode_batch`` only changes how passages of different lengths are padded together, not what is learned."""
    import sac_rag.sac_model as sac_model_mod

    sac = SACModel.from_model(tiny_llama(seed=2), byte_tokenizer(), SACConfig(ratio=4, lora_rank=4))
    item = TrainItem(("A passage about the river that runs past the old mill.", "Another text on the weather, rainy.",
                      "A third one, on the mill's owner and his dog."),
                     ((build_prompt("sac", "What runs past the mill?", 3), "the river"),), "qa")
    calls = []
    encode_chunks = sac_model_mod.encode_chunks
    monkeypatch.setattr(sac_model_mod, "encode_chunks", lambda *a: calls.append(len(a[-1])) or encode_chunks(*a))
    sac.model.train()
    results = []
    for encode_batch in (1, 3):
        cfg = TrainConfig(stage="qa", qa_data=("unused",), out_dir=str(tmp_path), max_passage_tokens=64,
                          max_target_tokens=16, encode_batch=encode_batch)
        for p in sac.trainable_parameters()["lora"] + [sac.embeddings.anchor]:
            p.requires_grad_(True)
            p.grad = None
        loss, _ = item_loss(sac, item, cfg)
        loss.backward()
        results.append((loss.item(), sac.embeddings.anchor.grad.clone()))
    assert calls == [1, 1, 1, 3]  # one at a time, then the three padded into one batch
    (loss1, grad1), (loss3, grad3) = results
    assert loss3 == pytest.approx(loss1, rel=1e-4)
    assert torch.allclose(grad3, grad1, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("encoder_only", [False, True], ids=["all", "encoder-only"])
def test_overfits_one_item(tmp_path, encoder_only):
    """Loss on one fixed item falls under AdamW: gradients reach LoRA and the SAC embeddings through the anchor KV.

    ``encoder_only`` freezes the [LM] embedding (which the decoder reads directly), so the loss can only fall
    through the anchors' keys and values.
    """
    sac = SACModel.from_model(tiny_llama(seed=1), byte_tokenizer(), SACConfig(ratio=4, lora_rank=4))
    cfg = TrainConfig(stage="qa", qa_data=("unused",), out_dir=str(tmp_path), max_passage_tokens=64,
                      max_target_tokens=16)
    passage = "The secret code of the vault is 7431, written on a card."
    item = TrainItem((passage, "An unrelated passage about the weather today."),
                     ((build_prompt("sac", "What is the code?", 2), "7431"),
                      (build_prompt("llamaindex", "Where is the code written?", 2), "on a card")), "qa")
    groups = sac.trainable_parameters()
    assert groups["lora"] and groups["embeddings"]
    params = groups["lora"] + ([sac.embeddings.anchor] if encoder_only else groups["embeddings"])
    for p in groups["lora"] + groups["embeddings"]:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    sac.model.train()
    losses = []
    for step in range(15):
        loss, n = item_loss(sac, item, cfg)
        assert n == len("7431") + 1 + len("on a card") + 1  # byte tokens + EOS, for both queries
        loss.backward()
        if step == 0:
            anchor = sac.embeddings.anchor.grad
            assert anchor is not None and anchor.abs().sum() > 0  # through the anchor KV
            lora_b = [p for name, p in sac.model.named_parameters() if "lora_B" in name]
            assert lora_b and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
            lm = sac.embeddings.lm.grad
            assert lm is None if encoder_only else (lm is not None and lm.abs().sum() > 0)
            assert all(p.grad is None for p in sac.base_model.parameters() if not p.requires_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-3:]) < 0.85 * losses[0], losses


def test_lr_schedule_warmup_constant_decay(tmp_path):
    from sac_rag import ConfigError
    from sac_rag.training.trainer import lr_scale

    cfg = TrainConfig(stage="qa", qa_data=("x",), steps=10, warmup=2, decay_steps=4, out_dir=str(tmp_path))
    assert [lr_scale(cfg, s) for s in range(10)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    flat = TrainConfig(stage="qa", qa_data=("x",), steps=10, warmup=1, out_dir=str(tmp_path))
    assert [lr_scale(flat, s) for s in range(10)] == [1.0] * 10
    with pytest.raises(ConfigError, match="decay_steps"):
        TrainConfig(stage="qa", qa_data=("x",), steps=10, decay_steps=11, out_dir=str(tmp_path))


def test_lora_alpha_defaults_to_twice_the_rank(tmp_path):
    # the scaling alpha / rank of the shipped adapters (32 / 16), whatever the rank; the CLI passes None through
    from sac_rag.cli import build_parser

    def cfg(**kw):
        return TrainConfig(stage="qa", qa_data=("x",), out_dir=str(tmp_path), **kw)

    assert cfg().lora_alpha == 32 and cfg().sac_config() == SACConfig()
    assert cfg(lora_rank=8).lora_alpha == 16 and cfg(lora_rank=8, lora_alpha=64).lora_alpha == 64
    assert cfg(lora_rank=0).lora_alpha == 1
    args = build_parser().parse_args(["train", "--lora-rank", "32"])
    assert args.lora_alpha is None and cfg(lora_rank=args.lora_rank, lora_alpha=args.lora_alpha).lora_alpha == 64


def test_lr_schedule_on_a_time_budget(tmp_path):
    from sac_rag import ConfigError
    from sac_rag.training.trainer import lr_scale

    cfg = TrainConfig(stage="qa", qa_data=("x",), steps=100, warmup=1, decay_steps=50, time_budget_s=60,
                      out_dir=str(tmp_path))
    # the decay follows whichever is further along: the steps done or the share of the budget spent
    assert lr_scale(cfg, 10, spent=0.25) == 1.0
    assert lr_scale(cfg, 10, spent=0.75) == pytest.approx(0.5)
    assert lr_scale(cfg, 75, spent=0.1) == pytest.approx(0.5)
    assert lr_scale(cfg, 10, spent=1.2) == 0.0
    with pytest.raises(ConfigError, match="time_budget_s"):
        TrainConfig(stage="qa", qa_data=("x",), time_budget_s=-1, out_dir=str(tmp_path))


def test_spent_time_budget_stops_the_run(base, data, tmp_path):
    out = tmp_path / "run"
    path = train(config(base, data, out, steps=50, time_budget_s=1e-9), progress=False)
    state = json.loads((out / "latest" / "state.json").read_text())
    assert state["step"] == 0 and path.is_dir()
    assert log_lines(out) == []


def test_resumed_run_keeps_what_is_left_of_its_time_budget(base, data, tmp_path):
    out = tmp_path / "run"
    train(config(base, data, out, steps=1), progress=False)
    state_file = out / "latest" / "state.json"
    state = json.loads(state_file.read_text())
    state["elapsed_s"] = 120.0  # as if the first invocation had trained for two minutes
    state_file.write_text(json.dumps(state))
    # a 100-s budget is spent already: the resumed run stops at once, though its steps are not
    train(config(base, data, out, steps=50, time_budget_s=100, resume=True), progress=False)
    assert json.loads(state_file.read_text())["step"] == 1 and len(log_lines(out)) == 1
    # a 10-minute budget is not: it trains on, its clock going on from the checkpoint's
    train(config(base, data, out, steps=2, time_budget_s=600, resume=True), progress=False)
    lines = log_lines(out)
    assert [r["step"] for r in lines] == [1, 2] and lines[-1]["elapsed_s"] >= 120


def test_decay_reaches_the_optimizer(base, data, tmp_path):
    out = tmp_path / "run"
    train(config(base, data, out, steps=3, warmup=1, decay_steps=2, lr=1e-3), progress=False)
    assert [r["lr"] for r in log_lines(out)] == pytest.approx([1e-3, 1e-3, 5e-4])


def test_distill_kl_hand_checked():
    from sac_rag.training.trainer import distill_kl

    same = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]])
    assert distill_kl(same, same).item() == pytest.approx(0.0, abs=1e-7)
    # teacher (1/2, 1/2), student (3/4, 1/4): 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    kl = distill_kl(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]]))
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-5)


def test_distill_config_is_checked(tmp_path):
    from sac_rag import ConfigError

    with pytest.raises(ConfigError, match="distill must be"):
        TrainConfig(stage="qa", qa_data=("x",), distill=1.5, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="QA stage of the sac method"):
        TrainConfig(stage="qa", qa_data=("x",), method="full-ft", distill=0.5, out_dir=str(tmp_path))
    assert "distill 0.5" in TrainConfig(stage="qa", qa_data=("x",), distill=0.5, out_dir=str(tmp_path)).recipe()


def trainable_tiny(tmp_path, *, seed: int, all_embeddings: bool) -> tuple[SACModel, list, dict]:
    """A tiny Llama-shaped SAC model in train mode with its LoRA and anchor embedding (``all_embeddings``: and
    [LM]) trainable, those parameters, and the keyword arguments of a QA TrainConfig for it."""
    sac = SACModel.from_model(tiny_llama(seed=seed), byte_tokenizer(), SACConfig(ratio=4, lora_rank=4))
    groups = sac.trainable_parameters()
    params = groups["lora"] + (groups["embeddings"] if all_embeddings else [sac.embeddings.anchor])
    for p in params:
        p.requires_grad_(True)
    sac.model.train()
    cfg = dict(stage="qa", qa_data=("unused",), out_dir=str(tmp_path), max_passage_tokens=64, max_target_tokens=16)
    return sac, params, cfg


def test_distillation_pulls_the_student_towards_the_text_reader(tmp_path):
    """With ``distill=1`` the loss is the KL to the frozen base reading the text: non-negative, it reaches the anchor
    embedding (not the frozen base), it falls under AdamW, and the mixed loss sits between CE and KL."""
    sac, params, cfg = trainable_tiny(tmp_path, seed=3, all_embeddings=False)
    item = TrainItem(("The vault code is 7431.", "It rained all day."),
                     ((build_prompt("sac", "What is the code?", 2), "7431"),), "qa")
    ce, _ = item_loss(sac, item, TrainConfig(**cfg))
    parts: dict = {}
    half, _ = item_loss(sac, item, TrainConfig(**cfg, distill=0.5), parts)
    kl_cfg = TrainConfig(**cfg, distill=1.0)
    kl, _ = item_loss(sac, item, kl_cfg)
    assert kl.item() >= 0
    assert half.item() == pytest.approx(0.5 * ce.item() + 0.5 * kl.item(), rel=1e-4)
    # the terms are reported apart, so a distilled run's cross-entropy is comparable with a plain run's
    assert parts["ce"] == pytest.approx(ce.item(), rel=1e-4) and parts["kl"] == pytest.approx(kl.item(), rel=1e-4)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    losses = []
    for step in range(12):
        loss, _ = item_loss(sac, item, kl_cfg)
        loss.backward()
        if step == 0:
            assert sac.embeddings.anchor.grad is not None and sac.embeddings.anchor.grad.abs().sum() > 0
            assert all(p.grad is None for p in sac.base_model.parameters() if not p.requires_grad)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.8 * losses[0], losses


def test_qa_run_with_lm_mix_trains_on_both_kinds(base, data, tmp_path, monkeypatch):
    long = " ".join(f"Sentence {i} of a long text about a topic, with several words." for i in range(20))
    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"question": "q?", "answers": ["a"], "passages": [long]}) + "\n", encoding="utf-8")
    out = tmp_path / "mix"
    cfg = config(base, data, out, steps=2, grad_accum=4, lm_mix=0.5, text_data=(f"{path}:jsonl",))
    expected = list(itertools.islice(item_stream(cfg), 8))
    assert {item.kind for item in expected} == {"lm", "qa"}  # this seed's first items hold both kinds
    seen = record_items(monkeypatch)
    train(cfg, progress=False)
    assert seen == expected
    rows = log_lines(out)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)
    assert "LM mix 0.5" in json.loads((out / "latest" / "adapter" / "sac_adapter.json").read_text())["info"]["recipe"]


def test_train_with_distillation_runs(base, data, tmp_path):
    out = tmp_path / "run"
    train(config(base, data, out, steps=2, distill=0.5), progress=False)
    rows = log_lines(out)
    assert all(math.isfinite(r["loss"]) for r in rows) and len(rows) == 2
    # the logged loss is the mix of the logged terms (each averaged over the step's items)
    assert all(r["loss"] == pytest.approx(0.5 * r["ce"] + 0.5 * r["kl"], abs=2e-4) for r in rows)


def _first_logits(tok, probs: dict[str, float]) -> torch.Tensor:
    """Logits over the byte vocabulary giving each named one-character token its probability, the rest ~0."""
    logits = torch.full((len(tok),), -40.0)
    for ch, p in probs.items():
        logits[tok.convert_tokens_to_ids(ch)] = math.log(p)
    return logits


def test_passage_choice_loss_hand_checked():
    """-log(m_gold / sum_j m_j) over the tokens that start a span in each passage (case folded, word starts)."""
    from sac_rag.grounding import SpanIndex
    from sac_rag.training.trainer import passage_choice_loss

    tok = byte_tokenizer()
    logits = _first_logits(tok, {"a": 0.4, "b": 0.3, "t": 0.1, "s": 0.1, "p": 0.05, "r": 0.05})
    index = SpanIndex(["Apple tree", "banana split"])
    a = tok.convert_tokens_to_ids("a")
    # gold: "a" and "t" start words (0.5); the distractor: "b" and "s" (0.4); "p" and "r" start no word
    loss = passage_choice_loss(logits, index, 0, a, tok, top_k=6)
    assert loss.item() == pytest.approx(-math.log(0.5 / 0.9), rel=1e-5)
    # the other way round, with the distractor as gold
    loss = passage_choice_loss(logits, index, 1, tok.convert_tokens_to_ids("b"), tok, top_k=6)
    assert loss.item() == pytest.approx(-math.log(0.4 / 0.9), rel=1e-5)
    # a token that starts words in both passages counts for each: it does not tell them apart
    shared = SpanIndex(["apple tree", "apple split"])
    loss = passage_choice_loss(logits, shared, 0, a, tok, top_k=6)
    assert loss.item() == pytest.approx(-math.log(0.5 / (0.5 + 0.5)), rel=1e-5)
    # only the top_k tokens and the target's first token are summed: with top_k=1 ("a"), "t" is left out
    loss = passage_choice_loss(logits, index, 0, a, tok, top_k=1)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # the target's first token joins the candidates even outside the top_k
    loss = passage_choice_loss(logits, index, 1, tok.convert_tokens_to_ids("s"), tok, top_k=1)
    assert loss.item() == pytest.approx(-math.log(0.1 / 0.5), rel=1e-5)


def test_passage_choice_loss_is_none_without_a_gold_candidate():
    from sac_rag.grounding import SpanIndex
    from sac_rag.training.trainer import passage_choice_loss

    tok = byte_tokenizer()
    logits = _first_logits(tok, {"b": 0.6, "s": 0.4})
    # no candidate starts a word of the gold passage (its answer is not in it as text): nothing to push towards
    assert passage_choice_loss(logits, SpanIndex(["quiet room", "banana split"]), 0, tok.convert_tokens_to_ids("b"),
                               tok, top_k=2) is None


def test_passage_choice_config_is_checked(tmp_path):
    from sac_rag import ConfigError

    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="passage_choice must be"):
            TrainConfig(stage="qa", qa_data=("x",), passage_choice=bad, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="QA stage"):
        TrainConfig(stage="lm", text_data=("x",), passage_choice=1.0, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="passage_choice_top_k"):
        TrainConfig(stage="qa", qa_data=("x",), passage_choice=1.0, passage_choice_top_k=0, out_dir=str(tmp_path))
    assert "passage choice 1" in TrainConfig(stage="qa", qa_data=("x",), passage_choice=1.0, out_dir=str(tmp_path)).recipe()


def test_passage_choice_moves_the_first_token_to_the_gold_passage(tmp_path):
    """The term is added to the cross-entropy, reported apart, reaches the anchors, and falls under AdamW; items
    without distractors, or without a known gold passage, do not get it."""
    sac, params, cfg = trainable_tiny(tmp_path, seed=4, all_embeddings=True)
    passages = ("It rained on the quiet harbour all day.", "The vault code is 7431, kept by Maria.")
    item = TrainItem(passages, ((build_prompt("sac", "Who keeps the code?", 2), " Maria"),), "qa", 1)
    ce, _ = item_loss(sac, item, TrainConfig(**cfg))
    parts: dict = {}
    both, _ = item_loss(sac, item, TrainConfig(**cfg, passage_choice=2.0), parts)
    assert parts["ce"] == pytest.approx(ce.item(), rel=1e-4) and parts["pc"] >= 0
    assert both.item() == pytest.approx(ce.item() + 2.0 * parts["pc"], rel=1e-4)
    alone = TrainItem(passages[1:], ((build_prompt("sac", "Who keeps the code?", 1), " Maria"),), "qa", 0)
    for no_term in (alone, TrainItem(passages, item.queries, "qa")):
        parts = {}
        item_loss(sac, no_term, TrainConfig(**cfg, passage_choice=2.0), parts)
        assert "pc" not in parts
    pc_cfg = TrainConfig(**cfg, passage_choice=50.0)  # mostly the passage term
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    pcs = []
    for step in range(12):
        parts = {}
        loss, _ = item_loss(sac, item, pc_cfg, parts)
        loss.backward()
        if step == 0:
            assert sac.embeddings.anchor.grad is not None and sac.embeddings.anchor.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad(set_to_none=True)
        pcs.append(parts["pc"])
    assert pcs[0] > 0.05 and min(pcs[-3:]) < 0.5 * pcs[0], pcs


def test_train_with_passage_choice_logs_both_terms(base, data, tmp_path):
    out = tmp_path / "run"
    train(config(base, data, out, steps=2, passage_choice=0.5, max_distractors=2), progress=False)
    rows = log_lines(out)
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) and math.isfinite(r["ce"]) for r in rows)
    assert any(r["pc"] is not None for r in rows)


def test_sibling_view_shares_lora_and_lm_not_anchors():
    sac = SACModel.from_model(tiny_llama(seed=3), byte_tokenizer(), SACConfig(ratio=4, lora_rank=4))
    sib = sac._sibling(8)
    assert sib.config.ratio == 8 and sac.config.ratio == 4
    assert sib.embeddings.lm is sac.embeddings.lm and sib.model is sac.model
    assert sib.embeddings.anchor.shape[0] == SACConfig(ratio=8, lora_rank=4).anchor_slots != sac.embeddings.anchor.shape[0]
    text = "A passage of some length, long enough to hold a few anchors at either ratio."
    assert sib.compress(text).num_anchors < sac.compress(text).num_anchors
    assert sib.fingerprint != sac.fingerprint  # KV of one ratio is never decoded as the other's


def test_joint_ratios_config_is_checked(tmp_path):
    from sac_rag import ConfigError

    for bad in ((5,), (15, 15), (0,)):
        with pytest.raises(ConfigError, match="joint_ratios"):
            TrainConfig(stage="qa", qa_data=("x",), ratio=5, joint_ratios=bad, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="joint_ratios"):
        TrainConfig(stage="qa", qa_data=("x",), method="full-ft", joint_ratios=(15,), out_dir=str(tmp_path))
    assert "joint with x15" in TrainConfig(stage="qa", qa_data=("x",), joint_ratios=(15,), out_dir=str(tmp_path)).recipe()


def test_joint_ratios_train_one_lora_for_both(base, data, tmp_path, monkeypatch):
    """One run, two ratios: items alternate, both adapters share LoRA and [LM] and keep their own anchors, and a
    resumed run restores the second ratio's anchors from its checkpoint."""
    ratios_seen: list[int] = []
    original = trainer_mod.item_loss

    def spy(sac, item, cfg, *rest):
        ratios_seen.append(sac.config.ratio)
        return original(sac, item, cfg, *rest)

    monkeypatch.setattr(trainer_mod, "item_loss", spy)
    out = tmp_path / "joint"
    cfg = config(base, data, out, steps=2, grad_accum=2, ratio=5, joint_ratios=(15,))
    train(cfg, progress=False)
    assert ratios_seen == [5, 15, 5, 15]
    assert all(set(r["loss_by_ratio"]) == {"5", "15"} for r in log_lines(out))
    five, fifteen = load(base, out / "latest" / "adapter"), load(base, out / "latest" / "adapter-x15")
    assert five.config.ratio == 5 and fifteen.config.ratio == 15 and fifteen.config.anchor_slots == 34
    lora5 = {n: p for n, p in five.model.named_parameters() if "lora_" in n}
    lora15 = {n: p for n, p in fifteen.model.named_parameters() if "lora_" in n}
    assert lora5.keys() == lora15.keys() and all(torch.equal(lora5[n], lora15[n]) for n in lora5)
    assert torch.equal(five.embeddings.lm, fifteen.embeddings.lm)
    # the 15x table started as the untrained 5x table mapped by slot position, and its own items moved it
    untrained = load(base, cfg=cfg)
    start15 = trainer_mod.map_anchor_slots(untrained.embeddings.anchor.detach(), untrained.config, fifteen.config)
    assert not torch.allclose(fifteen.embeddings.anchor, start15)
    assert fifteen.adapter_info["joint_with"] == 5 and fifteen.adapter_info["ratio"] == 15
    # resume with frozen rates: the 15x anchors come back from the checkpoint (not re-mapped from the 5x table)
    saved15 = fifteen.embeddings.anchor.detach().clone()
    train(config(base, data, out, steps=3, grad_accum=2, ratio=5, joint_ratios=(15,), lr=0.0, emb_lr=0.0), progress=False)
    assert torch.equal(load(base, out / "latest" / "adapter-x15").embeddings.anchor, saved15)
    assert ratios_seen[4:] == [5, 15]


def test_full_ft_teacher_reads_as_full_ft_does(base, data, tmp_path):
    """--teacher-adapter: distillation from the base with a full-ft LoRA; its logits are those full-ft training
    scores (same cross-entropy), not the bare base's; a SAC adapter is refused as a teacher."""
    from sac_rag import ConfigError

    with pytest.raises(ConfigError, match="needs distill"):
        config(base, data, tmp_path / "x", teacher_adapter="somewhere")
    ft = train(config(base, data, tmp_path / "ft", method="full-ft", steps=2), progress=False)
    sac_adapter = train(config(base, data, tmp_path / "sac", steps=1), progress=False)
    with pytest.raises(ConfigError, match="not a full-ft adapter"):
        trainer_mod._load_teacher(config(base, data, tmp_path / "y", distill=0.5, teacher_adapter=str(sac_adapter)))
    cfg = config(base, data, tmp_path / "kd", distill=0.5, teacher_adapter=str(ft))
    assert "distill 0.5 from full-ft" in cfg.recipe()
    teacher = trainer_mod._load_teacher(cfg)
    student = load(base, sac_adapter)
    item = next(item_stream(cfg))
    targets = [student.tokenize(t)[: cfg.max_target_tokens] + [student.tokenizer.eos_token_id] for _, t in item.queries]
    keep = [len(t) + 1 for t in targets]
    rows = trainer_mod._teacher_rows(teacher, item, targets, keep, cfg, lora=True)
    ce = torch.stack([torch.nn.functional.cross_entropy(r[:-1], torch.tensor(t)) for r, t in zip(rows, targets)]).mean()
    ft_ce, _ = item_loss(teacher, item, config(base, data, tmp_path / "z", method="full-ft"))
    assert ce.item() == pytest.approx(ft_ce.item(), rel=1e-4)
    bare = trainer_mod._teacher_rows(teacher, item, targets, keep, cfg, lora=False)
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(rows, bare))  # the LoRA matters
    # and a distilled run with it trains
    out = train(cfg, progress=False).parent.parent
    assert all(math.isfinite(r["ce"]) and math.isfinite(r["kl"]) for r in log_lines(out))


def test_cli_passes_lm_tokens_to_the_run(data, tmp_path, monkeypatch):
    """``sac-rag train --lm-tokens 4`` builds a run whose SAC config has four [LM] vectors (and names them in its recipe)."""
    import sac_rag.training as training_pkg
    from sac_rag.cli import main

    runs = []
    monkeypatch.setattr(training_pkg, "train", lambda cfg, **kw: runs.append(cfg) or tmp_path / "adapter")
    assert main(["train", "--qa-data", data, "--lm-tokens", "4", "--out", str(tmp_path / "run")]) == 0
    (cfg,) = runs
    assert cfg.lm_tokens == 4 and cfg.sac_config().lm_tokens == 4 and "4 [LM] vectors" in cfg.recipe()
