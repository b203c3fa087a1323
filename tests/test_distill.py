"""Stored teacher logits (sac_rag.training.distill): the sparse KL, the shard format and its checks, the teacher
pass and its resume, and a training run that reads them instead of a live teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import save_tiny_base, tiny_train_config, write_squad
from sac_rag import ConfigError, CorruptFileError
from sac_rag.cli import main
from sac_rag.training import trainer as trainer_mod
from sac_rag.training.distill import TeacherLogits, shared_prefix_rows, sparse_kl, write_teacher_logits
from sac_rag.training.tasks import TrainItem, build_prompt
from sac_rag.training.trainer import distill_kl, item_loss, item_stream, train

pytestmark = pytest.mark.filterwarnings("ignore:SACModel. no trained adapter:UserWarning")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.json"
    write_squad(path)
    return str(path)


@pytest.fixture(scope="module")
def full_ft(base, data, tmp_path_factory):
    """A full-ft adapter on the tiny base: the teacher."""
    return str(train(tiny_train_config(base, data, tmp_path_factory.mktemp("ft"), method="full-ft", steps=2), progress=False))


def teacher_cfg(base, data, full_ft, tmp_path, **kw):
    return tiny_train_config(base, data, tmp_path / "unused", **{"distill": 1.0, "teacher_adapter": full_ft, **kw})


def test_sparse_kl_hand_checked():
    # teacher over 4 tokens (0.5, 0.25, 0.125, 0.125), top 2 kept: buckets (0.5, 0.25, rest 0.25);
    # student uniform: buckets (0.25, 0.25, rest 0.5): KL = 0.5 ln 2 + 0 + 0.25 ln(0.5)
    teacher = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]]))
    top = torch.topk(teacher, 2, dim=-1)
    kl = sparse_kl(torch.zeros(1, 4), top.indices, top.values)
    assert kl.item() == pytest.approx(0.5 * math.log(2) + 0.25 * math.log(0.5), rel=1e-5)
    # the same student and teacher: zero, whatever k
    assert sparse_kl(teacher, top.indices, top.values).item() == pytest.approx(0.0, abs=1e-6)


def test_sparse_kl_is_the_full_kl_at_full_k_and_never_more_below():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 50, generator=g) * 3, torch.randn(6, 50, generator=g) * 3
    logp = torch.log_softmax(teacher, -1)
    full = distill_kl(student, teacher).item()
    at_v = torch.topk(logp, 50, dim=-1)
    assert sparse_kl(student, at_v.indices, at_v.values).item() == pytest.approx(full, rel=1e-5)
    for k in (1, 5, 20):
        top = torch.topk(logp, k, dim=-1)
        assert 0.0 <= sparse_kl(student, top.indices, top.values).item() <= full + 1e-6


def test_sparse_kl_gradient_is_finite_when_the_top_k_take_all_the_mass():
    student = torch.tensor([[30.0, 29.0, -30.0, -30.0]], requires_grad=True)
    teacher = torch.log(torch.tensor([[0.6, 0.4]]))
    sparse_kl(student, torch.tensor([[0, 1]]), teacher).backward()
    assert torch.isfinite(student.grad).all()


def test_shared_prefix_rows_are_the_batched_teachers(base, data, full_ft, tmp_path):
    """The teacher pass feeds the text that queries of one shape share once; its logits are the batched pass's."""
    cfg = teacher_cfg(base, data, full_ft, tmp_path)
    teacher = trainer_mod._load_teacher(cfg)
    passages = ("The vault code is 7431 and the door is red.", "It rained all day in the town of Lerwick.")
    queries = ((build_prompt("sac", "What is the code?", 2), " 7431"),
               (build_prompt("llamaindex", "Where did it rain?", 2), "Lerwick"),
               (build_prompt("sac", "What colour is the door?", 2), " red"),
               (build_prompt("sac", "Which town?", 2), " Lerwick"))
    items = [TrainItem(passages, queries, "qa", 0), *(it for _, it in zip(range(6), item_stream(cfg)))]
    for item in items:
        targets = [trainer_mod._target_ids(teacher, text, cfg, item.kind) for _, text in item.queries]
        batched = trainer_mod._teacher_rows(teacher, item, targets, [len(t) + 1 for t in targets], cfg, lora=True)
        shared = shared_prefix_rows(teacher, item, targets, cfg)
        assert [r.shape for r in shared] == [r.shape for r in batched]
        for a, b in zip(shared, batched):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_teacher_pass_stores_the_teachers_distributions_and_resumes(base, data, full_ft, tmp_path, caplog):
    cfg = teacher_cfg(base, data, full_ft, tmp_path)
    out = tmp_path / "logits"
    seen = []
    store = write_teacher_logits(cfg, out, items=5, k=8, shard_items=2, on_shard=seen.append)
    assert len(store) == 5 and store.k == 8 and seen == [2, 4, 5]
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-0000000.safetensors", "shard-0000002.safetensors",
                                                          "shard-0000004.safetensors"]
    teacher = trainer_mod._load_teacher(cfg)
    for i, item in zip(range(5), item_stream(cfg)):  # each stored item is the stream's, with the live teacher's top-k
        targets = [trainer_mod._target_ids(teacher, text, cfg, item.kind) for _, text in item.queries]
        rows = trainer_mod._teacher_rows(teacher, item, targets, [len(t) + 1 for t in targets], cfg, lora=True)
        stored = store.item(i)
        assert [q.targets.tolist() for q in stored] == targets
        for q, row in zip(stored, rows):
            logp = torch.log_softmax(row[:-1].float(), -1)
            assert torch.allclose(logp.gather(-1, q.ids.long()), q.logprobs, atol=2e-2)  # stored in float16
            assert torch.equal(q.ids.long(), torch.topk(logp, 8, -1).indices)
    first = (out / "shard-0000000.safetensors").read_bytes()
    # resume: the next items are appended, the stored ones are kept as they are
    assert len(write_teacher_logits(cfg, out, items=7, k=8, shard_items=2)) == 7
    assert (out / "shard-0000000.safetensors").read_bytes() == first
    assert json.loads((out / "manifest.json").read_text())["shards"][-1] == {"file": "shard-0000005.safetensors", "items": 2}
    with pytest.raises(ConfigError, match="another teacher or k"):
        write_teacher_logits(cfg, out, items=9, k=4)
    with pytest.raises(ConfigError, match="differ in seed"):  # another stream: refused, by name
        write_teacher_logits(teacher_cfg(base, data, full_ft, tmp_path, seed=1), out, items=9, k=8)
    with pytest.raises(ConfigError, match="item 7 is not there"):
        store.reload()
        store.item(7)
    # a reader may wait for a writer: it says so, then gives up after wait_s
    with caplog.at_level("WARNING", logger="sac_rag.training.distill"), pytest.raises(ConfigError, match="item 7"):
        store.item(7, wait_s=0.2)
    assert "waiting up to 0 s for the teacher logits of item 7" in caplog.text


def test_stored_logits_give_the_live_teachers_loss_at_full_k(base, data, full_ft, tmp_path):
    """With every token kept (k = vocab), distilling from the stored logits is distilling from the live teacher."""
    cfg = teacher_cfg(base, data, full_ft, tmp_path, distill=0.5)
    teacher = trainer_mod._load_teacher(cfg)
    vocab = teacher.model.get_input_embeddings().weight.shape[0]
    store = write_teacher_logits(cfg, tmp_path / "all", items=2, k=vocab)
    student = trainer_mod._untrained(cfg)
    for i, item in zip(range(2), item_stream(cfg)):
        live_parts, stored_parts = {}, {}
        live, _ = item_loss(student, item, cfg, live_parts, teacher)
        from_store, _ = item_loss(student, item, cfg, stored_parts, None, store.item(i))
        assert stored_parts["ce"] == live_parts["ce"]
        assert stored_parts["kl"] == pytest.approx(live_parts["kl"], rel=2e-3, abs=2e-3)
        assert from_store.item() == pytest.approx(live.item(), rel=2e-3, abs=2e-3)
    # an item whose targets differ from the stored ones is refused (another tokenizer, file or position)
    items = item_stream(cfg)
    next(items)
    with pytest.raises(ConfigError, match="other targets"):
        item_loss(student, next(items), cfg, {}, None, store.item(0))


def test_train_reads_stored_logits(base, data, full_ft, tmp_path):
    stream = dict(distill=0.5)
    write_teacher_logits(teacher_cfg(base, data, full_ft, tmp_path, **stream), tmp_path / "tl", items=3, k=16)
    out = tmp_path / "run"
    cfg = tiny_train_config(base, data, out, steps=3, teacher_logits=str(tmp_path / "tl"), **stream)
    assert "distill 0.5 from stored logits" in cfg.recipe()
    train(cfg, progress=False)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["kl"]) and r["kl"] >= 0 for r in rows)
    assert all(r["loss"] == pytest.approx(0.5 * r["ce"] + 0.5 * r["kl"], abs=2e-4) for r in rows)
    # a fourth step needs a fourth item: the run stops with a clear error instead of training without a teacher
    with pytest.raises(ConfigError, match="item 3 is not there"):
        train(tiny_train_config(base, data, out, steps=4, teacher_logits=str(tmp_path / "tl"), **stream), progress=False)
    # another stream (seed) is refused before any step
    with pytest.raises(ConfigError, match="another item stream"):
        train(tiny_train_config(base, data, tmp_path / "r2", seed=5, teacher_logits=str(tmp_path / "tl"), **stream),
              progress=False)


def test_stored_logits_config_and_files_are_checked(base, data, full_ft, tmp_path):
    with pytest.raises(ConfigError, match="needs distill"):
        tiny_train_config(base, data, tmp_path / "a", teacher_logits="x")
    with pytest.raises(ConfigError, match="not both"):
        tiny_train_config(base, data, tmp_path / "a", distill=0.5, teacher_logits="x", teacher_adapter=full_ft)
    with pytest.raises(ConfigError, match="teacher_wait_s"):
        tiny_train_config(base, data, tmp_path / "a", distill=0.5, teacher_logits="x", teacher_wait_s=-1)
    with pytest.raises(ConfigError, match="no stored teacher logits"):
        TeacherLogits(tmp_path)
    with pytest.raises(ConfigError, match="with a teacher_adapter"):
        write_teacher_logits(tiny_train_config(base, data, tmp_path / "a"), tmp_path / "b", items=1)
    store = write_teacher_logits(teacher_cfg(base, data, full_ft, tmp_path), tmp_path / "tl", items=1, k=4)
    (tmp_path / "tl" / "shard-0000000.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptFileError, match="cannot be read"):
        TeacherLogits(store.path).item(0)


def test_cli_writes_teacher_logits(base, data, full_ft, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["teacher-logits", "--model", base, "--teacher-adapter", full_ft, "--qa-data", data, "--items", "3",
            "--top-k", "4", "--shard-items", "2", "--dtype", "float32", "--max-distractors", "1", "--max-questions", "2",
            "--out", str(out)]
    assert main(args) == 0
    assert "3 items stored" in capsys.readouterr().out
    store = TeacherLogits(out)
    assert len(store) == 3 and store.k == 4
    assert all(q.ids.shape[1] == 4 for i in range(3) for q in store.item(i))
