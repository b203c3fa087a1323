"""The ``sac-rag`` command: ``demo``, ``train``, ``eval``, ``bench``, ``report``, ``compare``, ``breakdown``, ``average``, ``info``.

Each subcommand parses its flags and calls the library; no model logic here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

__all__ = ["main"]


def _demo_corpus() -> dict:
    return json.loads(resources.files("sac_rag").joinpath("data/demo_corpus.json").read_text(encoding="utf-8"))


def _full_kv_bytes(sac, tokens: int) -> int:
    """Bytes a plain KV cache of ``tokens`` tokens takes in this model (what full context would keep)."""
    cfg = sac.base_model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * tokens * sac.dtype.itemsize


def _timed_stream(pieces) -> tuple[str, float]:
    """(text, seconds to the first piece) of a stream."""
    t0 = time.perf_counter()
    first, text = None, []
    for piece in pieces:
        if first is None:
            first = time.perf_counter() - t0
        text.append(piece.text)
    return "".join(text).strip(), first or 0.0


def cmd_demo(args: argparse.Namespace) -> int:
    from statistics import median

    from . import KVStore, SACCompressor, SACModel
    from .config import QA_TEMPLATE
    from .evaluation.metrics import f1
    from .models import cache_dir
    from .ordering import prompt_order
    from .retrieval import FaissIndex

    corpus = _demo_corpus()
    print(f"Loading the base model ({args.model or 'embedded Gemma 3 270M'}) ...", flush=True)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sac = SACModel.from_pretrained(args.model, adapter=args.adapter or "auto", ratio=args.ratio, device=args.device, dtype=args.dtype)
    print(f"  {sac} in {time.perf_counter() - t:.1f} s")
    if sac.trained:
        info = sac.adapter_info
        prior = info.get("before")  # what the adapter it started from had already seen
        before = prior.get("items") if isinstance(prior, dict) else None
        before = before if isinstance(before, int) else 0
        known = [f"{info['stage']} stage" if info.get("stage") else "", f"{info['step']} steps" if info.get("step") else "",
                 f"{info['items']:,} examples" + (f" ({info['items'] + before:,} in all)" if before else "")
                 if isinstance(info.get("items"), int) else "",
                 f"the average of {len(info['averaged_from'])} runs" if info.get("averaged_from") else ""]
        print(f"Adapter: {sac.adapter_path} (trained: {', '.join(k for k in known if k) or 'no record'})")
        if info.get("status"):
            print(f"  status: {info['status']}")
    else:
        print("Adapter: UNTRAINED. No trained adapter ships for this model and ratio yet: the anchors are not trained "
              "to carry their passages, so SAC answers below are expected to be wrong. Full context is shown beside them.")
    passages = [p["text"] for p in corpus["passages"]]
    t = time.perf_counter()
    index = FaissIndex(passages)
    print(f"Indexed {len(passages)} passages with all-MiniLM-L6-v2 + FAISS in {time.perf_counter() - t:.1f} s")
    store_dir = None if args.no_disk else cache_dir() / "demo-store"
    compressor = SACCompressor(sac, KVStore(directory=store_dir))
    t = time.perf_counter()
    stats = compressor.precompress(passages, progress=True)
    new = sum(not s.cached for s in stats)
    print(f"Precompressed: {new} compressed now, {len(stats) - new} already in the store ({store_dir or 'memory'}), "
          f"{time.perf_counter() - t:.1f} s; {sum(s.num_tokens for s in stats)} tokens -> "
          f"{sum(s.num_anchors for s in stats)} anchors at ratio {sac.config.ratio}\n")
    ttft_sac, ttft_full = [], []
    scores = {"SAC": [], "SAC, grounded": [], "full context": []}
    for q in corpus["questions"][: args.questions]:
        found = index.search(q["question"], args.k)  # most relevant first
        hits = [found[i] for i in prompt_order(len(found))]  # best last: the order the adapters were trained for
        marked = compressor.compress([h.text for h in hits])  # all found in the store: nothing is recompressed
        prompt = "".join(m.marker for m in marked) + QA_TEMPLATE.format(question=q["question"])
        sac_text, sac_ttft = _timed_stream(compressor.stream(prompt, max_new_tokens=24, stop=["\n"]))
        grounded = compressor.generate(prompt, grounded=True, max_new_tokens=24, stop=["\n"])  # .span: where it lies
        full_prompt = "".join(sac.config.template + h.text + "\n" for h in hits).rstrip("\n") + QA_TEMPLATE.format(question=q["question"])
        full_text, full_ttft = _timed_stream(sac.stream([full_prompt], max_new_tokens=24, stop=["\n"]))
        ttft_sac.append(sac_ttft)
        ttft_full.append(full_ttft)
        for name, text in (("SAC", sac_text), ("SAC, grounded", grounded.text), ("full context", full_text)):
            scores[name].append(f1(text, q["answers"]))
        tokens = sum(m.num_tokens for m in marked)
        span = grounded.span
        where = f"a span of passage {span.passage + 1} of {len(hits)}" if span is not None else "no span"
        print(f"Q: {q['question']}   (gold: {q['answers'][0]})")
        print(f"   SAC : {sac_text!r:48} first token {sac_ttft:5.2f} s, KV {sum(m.nbytes for m in marked) / 1e6:5.2f} MB "
              f"({sum(m.num_anchors for m in marked)} anchors)")
        print(f"   SAC, grounded: {grounded.text.strip()!r:38} {where} (the best-ranked is {len(hits)})")
        print(f"   full: {full_text!r:48} first token {full_ttft:5.2f} s, KV {_full_kv_bytes(sac, tokens) / 1e6:5.2f} MB "
              f"({tokens} tokens)")
    st = compressor.store.stats()
    print(f"\nMedian time to first token: SAC {median(ttft_sac):.2f} s, full context {median(ttft_full):.2f} s "
          f"({median(ttft_full) / max(1e-9, median(ttft_sac)):.1f}x); store hit rate {st.hit_rate:.0%} "
          f"({st.hits} hits, {st.misses} misses)")
    print(f"Mean F1 against the gold answers over these {len(scores['SAC'])} questions (SQuAD-normalized): "
          + ", ".join(f"{name} {100 * sum(v) / max(1, len(v)):.1f}" for name, v in scores.items())
          + ". Full context here is the base model reading the text zero-shot, with no training; "
          "the README's table compares SAC with fine-tuned rivals on 500 questions.")
    print(f"Passages: {corpus['source']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, train

    cfg = TrainConfig(
        stage=args.stage, method=args.method, qa_data=tuple(args.qa_data or ()), text_data=tuple(args.text_data or ()), base_model=args.model,
        init_adapter=args.init_adapter, ratio=args.ratio, joint_ratios=tuple(args.joint_ratios or ()), lora_rank=args.lora_rank, steps=args.steps,
        lora_alpha=args.lora_alpha, lm_tokens=args.lm_tokens,
        **({"lora_targets": tuple(args.lora_targets)} if args.lora_targets else {}),
        grad_accum=args.grad_accum, lr=args.lr, emb_lr=args.emb_lr, warmup=args.warmup, decay_steps=args.decay_steps,
        time_budget_s=args.time_budget, encode_batch=args.encode_batch, distill=args.distill,
        teacher_adapter=args.teacher_adapter, teacher_logits=args.teacher_logits, teacher_wait_s=args.teacher_wait,
        passage_choice=args.passage_choice, gold_last=args.gold_last,
        hard_negatives=args.hard_negatives, lm_mix=args.lm_mix,
        max_distractors=args.max_distractors, max_questions=args.max_questions,
        dtype=args.dtype or "auto", threads=args.threads, seed=args.seed, out_dir=args.out or "",
        save_every_s=args.save_every, resume=not args.no_resume,
    )
    if cfg.stage == "qa":  # what each source will weigh, before hours go into it
        from .training import mixture

        for src in mixture(cfg):
            print(f"data: {src.share:6.1%} of the gold passages  {src.passages:,} passages, {src.questions:,} questions  "
                  f"{src.spec}", file=sys.stderr)
    if args.workers > 1:
        from .training.local_sgd import train_local_sgd

        path = train_local_sgd(cfg, workers=args.workers, rounds=args.rounds)
        print(f"averaged adapter of the last round: {path}")
        return 0
    if args.rounds != 1:
        raise SystemExit("--rounds needs --workers 2 or more (rounds average the workers' adapters)")
    path = train(cfg)
    print(f"latest adapter: {path}")
    return 0


def cmd_teacher_logits(args: argparse.Namespace) -> int:
    from .training import TrainConfig
    from .training.distill import write_teacher_logits

    # the stream's settings as `sac-rag train` takes them; a student run names the same ones and --teacher-logits
    cfg = TrainConfig(
        stage="qa", qa_data=tuple(args.qa_data or ()), base_model=args.model, distill=1.0,
        teacher_adapter=args.teacher_adapter, gold_last=args.gold_last, hard_negatives=args.hard_negatives,
        max_distractors=args.max_distractors, max_questions=args.max_questions, dtype=args.dtype or "auto",
        threads=args.threads, seed=args.seed, out_dir=args.out,
    )
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    from tqdm.auto import tqdm

    bar = tqdm(total=args.items, desc="teacher logits", unit="item")
    t0 = time.perf_counter()

    def shard_done(n: int) -> None:
        bar.update(n - bar.n)

    store = write_teacher_logits(cfg, args.out, args.items, k=args.top_k, shard_items=args.shard_items, on_shard=shard_done)
    bar.close()
    size = sum(f.stat().st_size for f in Path(args.out).glob("shard-*.safetensors"))
    print(f"{len(store)} items stored in {args.out} (top {store.k}, {size / 1e6:.1f} MB; this pass "
          f"{time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import SACModel
    from .evaluation.qa import EvalConfig, evaluate

    cfg = EvalConfig(data=args.data, fmt=args.format, parity=args.parity, method=args.method, ratio=args.ratio,
                     passages=args.passages, limit=args.limit, offset=args.offset, shots=args.shots, seed=args.seed,
                     llmlingua_segment=args.llmlingua_segment, grounded=args.grounded or args.pick_passage,
                     pick_passage=args.pick_passage, order=args.order,
                     distractors=args.distractors, reuse_kv=args.reuse_kv)
    if args.method == "full-ft" and not args.adapter:
        raise SystemExit("--method full-ft needs --adapter (a run of: sac-rag train --method full-ft)")
    adapter = args.adapter or ("auto" if args.method == "sac" else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sac = SACModel.from_pretrained(args.model, adapter=adapter, ratio=args.ratio, device=args.device, dtype=args.dtype)
    result = evaluate(sac, cfg, out=args.json, reuse=args.reuse)
    print(json.dumps(result["summary"], indent=1))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .evaluation.bench import BenchConfig, run_bench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_bench(BenchConfig(model=args.model, dtype=args.dtype, out_dir=args.out, quick=args.quick,
                              **({"repeats": args.repeats} if args.repeats else {})))
    print(f"report written to {args.out}/")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .evaluation.report import write_report

    curves = args.curves if args.curves is not None else Path(args.results) / "curve"
    path = write_report(args.results, args.out, logs=args.log or [], curve_dir=curves)
    print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .evaluation.compare import paired_difference

    rows = [paired_difference(args.reference, c, metric=args.metric) for c in args.candidates]
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    print(f"paired {args.metric} against {args.reference} (candidate - reference; standard error in brackets)")
    for r in rows:
        print(f"{r.candidate}: n {r.n}, {r.reference_mean:.1f} -> {r.candidate_mean:.1f}, {r.diff:+.2f} [{r.se:.2f}], "
              f"better on {r.better}, worse on {r.worse}, tied on {r.ties}")
    return 0


def cmd_breakdown(args: argparse.Namespace) -> int:
    from .evaluation.breakdown import CATEGORIES, breakdown

    rows = [breakdown(path, data=args.data) for path in args.results]
    if args.json:
        print(json.dumps([r.to_dict() if args.ids else {**r.to_dict(), "ids": None} for r in rows], indent=2))
        return 0
    print("answers by where they went wrong: count (percent); for F1 0, whether the answer is a span of the gold "
          "passage, of a distractor, or of no passage")
    grounded = any(r.spans is not None for r in rows)
    extra = " from the gold passage |" if grounded else ""
    print("| file | method | n | " + " | ".join(CATEGORIES) + " |" + extra)
    print("|---|---|---|" + "---|" * len(CATEGORIES) + ("---|" if grounded else ""))
    for r in rows:
        cells = " | ".join(f"{r.counts[c]} ({r.share(c):.0f}%)" for c in CATEGORIES)
        gold = "" if not grounded else (" n/a |" if r.spans is None else f" {r.from_gold} of {r.spans} ({r.gold_share() or 0:.0f}%) |")
        print(f"| {r.path} | {r.method} | {r.n} | {cells} |{gold}")
    placed = [r for r in rows if r.by_gold_place]
    if placed:
        most = max(max(r.by_gold_place) for r in placed)
        print("\nF1 by the gold passage's place in the prompt, counted from the end (1: last, nearest the question): "
              "questions, mean F1")
        print("| file | " + " | ".join(f"place {k}" for k in range(1, most + 1)) + " |")
        print("|---|" + "---|" * most)
        for r in placed:
            cells = " | ".join(f"{int(c['n'])}, {c['f1']:.1f}" if (c := r.by_gold_place.get(k)) else "-"
                              for k in range(1, most + 1))
            print(f"| {r.path} | {cells} |")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from .training.average import average_adapters

    result = average_adapters(args.adapters, args.out, weights=args.weights, rank=args.rank)
    kind = "extrapolation" if min(result.weights) < 0 else "average"
    print(f"wrote {result.path}: the {kind} of {len(result.sources)} adapters (weights "
          f"{', '.join(f'{w:.3g}' for w in result.weights)}), LoRA rank {result.rank}; the rank cut dropped "
          f"{100 * result.mean_truncation:.2f}% of the mean update's norm on average over {result.modules} modules "
          f"(worst {100 * result.max_truncation:.2f}%)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .models import cache_dir, resolve_device, resolve_dtype
    from .sac_model import shipped_adapter

    dev = resolve_device(None)
    print(f"sac-rag {__version__}; torch {torch.__version__}; device {dev}; default dtype {resolve_dtype(None, dev)}")
    print(f"cache: {cache_dir()}")
    for r in (5, 15):
        print(f"shipped adapter x{r}: {shipped_adapter(r) or 'none (untrained)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sac-rag", description="Semantic-Anchor Compression for RAG")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p):
        p.add_argument("--model", default=None, help="HF model id or path (default: the embedded Gemma 3 270M)")
        p.add_argument("--ratio", type=int, default=5)
        p.add_argument("--device", default=None)
        p.add_argument("--dtype", default=None, help="bfloat16 | float32 | auto (default)")

    p = sub.add_parser("demo", help="retrieve, precompress and answer questions over a bundled corpus, SAC beside full context")
    model_args(p)
    p.add_argument("--adapter", default=None, help="adapter directory (default: the shipped one for --ratio)")
    p.add_argument("--questions", type=int, default=6)
    p.add_argument("--k", type=int, default=3, help="passages retrieved per question")
    p.add_argument("--no-disk", action="store_true", help="keep the KV store in memory only")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train an SAC adapter (resumes from the latest checkpoint)")
    model_args(p)
    p.add_argument("--stage", choices=["lm", "qa"], default="qa")
    p.add_argument("--method", choices=["sac", "full-ft"], default="sac",
                   help="full-ft: train the uncompressed rival (LoRA on the base reading the full text)")
    p.add_argument("--qa-data", action="append",
                   help="path[:format[:even|odd]][@weight] (repeatable); with weights (on every source), each "
                        "source's share of the gold passages drawn; without, every passage once per pass")
    p.add_argument("--text-data", action="append", help="LM text source, same syntax (repeatable)")
    p.add_argument("--init-adapter", default=None)
    p.add_argument("--joint-ratios", type=int, nargs="+", default=None, metavar="R",
                   help="train these ratios too, with one LoRA and [LM] embedding shared with --ratio (each ratio keeps "
                        "its own anchor table; items take the ratios in turn); saved as latest/adapter-x<R>")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=None,
                   help="LoRA alpha (default: twice the rank, which keeps the shipped adapters' scaling, 32/16)")
    p.add_argument("--lora-targets", nargs="+", default=None, metavar="MODULE",
                   help="module names the LoRA wraps (default: q_proj k_proj v_proj o_proj); with --init-adapter, a "
                        "superset of the adapter's: the added modules start at zero, so the run starts from the adapter")
    p.add_argument("--lm-tokens", type=int, default=1, metavar="K",
                   help="learned [LM] vectors after each run of compressed passages (default 1, the paper's; more: a "
                        "soft prompt for the frozen decoder); with --init-adapter, at least the adapter's count, the "
                        "added ones starting as copies of its last")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--emb-lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--decay-steps", type=int, default=0,
                   help="decay the learning rate linearly to zero over the last N of --steps (0: constant, as the paper)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="stop after this many seconds of training, a resumed run's earlier ones included; the "
                        "--decay-steps share of the schedule then runs on time, ending with the budget (0: no budget)")
    p.add_argument("--encode-batch", type=int, default=0,
                   help="passages of an item encoded in one batch (0: one at a time on a CPU, all at once on a GPU)")
    p.add_argument("--distill", type=float, default=0.0,
                   help="weight of a KL term towards the frozen base model reading the passages as text (QA stage; 0: off)")
    p.add_argument("--teacher-adapter", default=None,
                   help="with --distill: a full-ft adapter; the teacher is the base model with it, reading the text")
    p.add_argument("--teacher-logits", default=None, metavar="DIR",
                   help="with --distill: a full-ft teacher's top-k distributions stored for this run's item stream "
                        "(sac-rag teacher-logits with the same data and stream options); no live teacher runs")
    p.add_argument("--teacher-wait", type=float, default=0.0, metavar="S",
                   help="with --teacher-logits: wait up to S seconds for items a teacher pass is still writing")
    p.add_argument("--passage-choice", type=float, default=0.0,
                   help="weight of a term pushing the first answer token's probability towards tokens that start "
                        "a span in the gold passage rather than in a distractor (QA stage; 0: off)")
    p.add_argument("--gold-last", type=float, default=0.0,
                   help="chance that an item's gold passage goes last among its distractors, the order the "
                        "integrations send by default (QA stage; 0: random order)")
    p.add_argument("--hard-negatives", type=float, default=0.0,
                   help="chance that an item's distractors are hard negatives: passages the embedded MiniLM ranks "
                        "nearest its questions that hold none of their answers (QA stage; 0: random distractors)")
    p.add_argument("--lm-mix", type=float, default=0.0,
                   help="chance that an item is an LM-continuation item (compress a passage's start, predict the "
                        "rest) from --text-data or the QA sources' passages, between the same QA items (QA stage; 0: off)")
    p.add_argument("--max-distractors", type=int, default=4)
    p.add_argument("--max-questions", type=int, default=4, help="questions decoded from one compression (QA stage)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default: ~/.cache/sac-rag/runs/<stage>-x<ratio>)")
    p.add_argument("--save-every", type=float, default=300.0, help="seconds between checkpoints")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--workers", type=int, default=1,
                   help="local SGD: this many runs side by side (each its own process, seed and --threads, by default the cores shared out), "
                        "averaged after each round (default 1: plain training)")
    p.add_argument("--rounds", type=int, default=1,
                   help="with --workers: rounds to split the schedule into (--steps, --decay-steps and --time-budget "
                        "are the whole run's); the last round's average is the result")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("teacher-logits", help="store a full-ft teacher's top-k answer distributions for a training "
                                              "run's items (read by sac-rag train --distill W --teacher-logits DIR)")
    p.add_argument("--model", default=None, help="HF model id or path (default: the embedded Gemma 3 270M)")
    p.add_argument("--dtype", default=None, help="bfloat16 | float32 | auto (default)")
    p.add_argument("--teacher-adapter", required=True, help="a full-ft adapter (sac-rag train --method full-ft)")
    p.add_argument("--qa-data", action="append", required=True, help="as sac-rag train's (the same sources, in order)")
    p.add_argument("--items", type=int, required=True, help="items of the stream to store (a resumed pass goes on)")
    p.add_argument("--top-k", type=int, default=32, help="tokens kept per answer position (the rest is one bucket)")
    p.add_argument("--shard-items", type=int, default=25, help="items per shard file (what a reader sees at once)")
    p.add_argument("--gold-last", type=float, default=0.0)
    p.add_argument("--hard-negatives", type=float, default=0.0)
    p.add_argument("--max-distractors", type=int, default=4)
    p.add_argument("--max-questions", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory of the stored logits")
    p.set_defaults(func=cmd_teacher_logits)

    p = sub.add_parser("eval", help="QA evaluation of one method (sac, full, truncate, closed-book, llmlingua, full-ft)")
    model_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--format", choices=["squad", "nq", "mrqa", "jsonl"], default=None)
    p.add_argument("--parity", choices=["even", "odd"], default=None, help="keep items by index parity (NQ split)")
    p.add_argument("--method", choices=["sac", "full", "truncate", "closed-book", "llmlingua", "full-ft"], default="sac")
    p.add_argument("--llmlingua-segment", type=int, default=200,
                   help="LLMLingua's iterative_size (its default 200; 30 lets it reach the asked ratio on short passages)")
    p.add_argument("--adapter", default=None)
    p.add_argument("--passages", type=int, default=1, help="1: gold only; k: gold among k-1 distractors")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--offset", type=int, default=0, help="skip this many shuffled questions (disjoint curve slices)")
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grounded", action="store_true",
                   help="the answer must be a span of the question's passages (their text filters next tokens only)")
    p.add_argument("--order", choices=("random", "relevance"), default="random",
                   help="where the passages go: random (drawn with --seed), or relevance: the same passages ranked by the "
                        "embedded MiniLM's similarity to the question, most relevant last, as the integrations place them")
    p.add_argument("--distractors", choices=("random", "retrieved"), default="random",
                   help="with --passages > 1: random passages of the file (drawn with --seed), or retrieved: those the "
                        "embedded MiniLM ranks nearest the question that hold none of its answers (a retriever's near misses)")
    p.add_argument("--reuse-kv", action="store_true",
                   help="sac: compress each distinct passage once and reuse its anchor KV for later questions (a gold "
                        "passage serves all its questions); equal to fresh KVs up to rounding, so compare like with like")
    p.add_argument("--pick-passage", action="store_true",
                   help="grounded, two-stage: pick the passage the decoder points at reading all of them, then answer "
                        "from it read alone (implies --grounded; the picked passage's second read is counted)")
    p.add_argument("--json", default=None, help="write per-item records and the summary here")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="an earlier --json of the same run with a smaller --limit: keep its answers, run only the rest")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="time to first token, throughput, decode speed and memory: SAC vs full context")
    p.add_argument("--model", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--quick", action="store_true", help="a subset that runs in a few minutes")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default="docs")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="regenerate docs/results.md and plots from eval JSONs and training logs")
    p.add_argument("--results", required=True, help="directory of sac-rag eval --json files")
    p.add_argument("--log", action="append", help="a training log.jsonl (repeatable)")
    p.add_argument("--curves", default=None, help="evals of training checkpoints on a held-out slice (default: RESULTS/curve)")
    p.add_argument("--out", default="docs")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="paired difference of eval runs on the same questions, with its standard error")
    p.add_argument("reference", help="an eval --json file")
    p.add_argument("candidates", nargs="+", help="eval --json files of the same data and setting")
    p.add_argument("--metric", default="f1", choices=["f1", "em", "rouge1", "raw_em"])
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("breakdown", help="sort an eval run's answers by where they went wrong (wrong span, a "
                       "distractor's text, text in no passage)")
    p.add_argument("results", nargs="+", help="eval --json files")
    p.add_argument("--data", default=None, help="the data file, if not where the runs recorded it")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--ids", action="store_true", help="with --json: list each category's question ids")
    p.set_defaults(func=cmd_breakdown)

    p = sub.add_parser("average", help="average adapters trained from one start (LoRA updates averaged, cut back to a rank by SVD)")
    p.add_argument("adapters", nargs="+", help="adapter directories (same base model and config)")
    p.add_argument("--out", required=True, help="directory to write the averaged adapter to")
    p.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per adapter (default: equal); normalised to sum to 1; a negative "
                   "weight extrapolates: --weights -2 3 over START END goes 3x as far as END went from START")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank of the result (default: the adapters' rank)")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("info", help="versions, device, cache and shipped adapters")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import SACError

    try:
        return args.func(args)
    except SACError as exc:  # bad input or config: the message says what to fix, a traceback would bury it
        print(f"sac-rag {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
