"""What session 21's selection scripts share: the questions (SQuAD part 2 questions 3100-3299 of the shuffle, or
NQ-open odd items 700-899), the model (SAC 5x or `full-ft`, float32, one thread) and each question's prompt."""
import torch

from sac_rag import SACModel
from sac_rag.evaluation.qa import EvalConfig, _segments, select_examples
from sac_rag.generation import SamplingParams

S = "/work/shared/data"
FT = "/root/.cache/sac-rag/runs/full-ft-qa/latest/adapter"


def setup(method: str, data: str, k: int, limit: int = 200):
    """(model, [(question, passages)], sampling params) for METHOD (sac or full-ft) on DATA (sq or nq), k passages."""
    torch.set_num_threads(1)
    if data == "sq":
        cfg = EvalConfig(data=f"{S}/squad/squad-v1.1-dev-part2.json", passages=k, offset=3100, limit=limit)
    else:
        cfg = EvalConfig(data=f"{S}/nq_open/nq-open-oracle.jsonl.gz", fmt="nq", parity="odd", passages=k, offset=700,
                         limit=limit)
    sac = SACModel.from_pretrained(adapter=FT if method == "full-ft" else "auto", ratio=5, dtype="float32", device="cpu")
    return sac, cfg, select_examples(cfg), SamplingParams(24, stop=("\n",))


def prompt(sac, method: str, question: str, passages: list[str]):
    """(decoder context, segments) reading all ``passages``; `full-ft` decodes with its LoRA on."""
    segs, _ = _segments(sac, "full" if method == "full-ft" else "sac", question, passages, [], 5)
    ctx = sac._context()
    if method == "full-ft":
        ctx.decoder_mode = sac.encoder_mode
    return ctx, segs


def questions(argv: list[str], limit: int = 200):
    """For ``argv`` = [script, METHOD, DATA, PASSAGES, OUT, (LIMIT)]: yield, per question, (n, example, passages,
    decoder context, the prompt prefilled, a SpanIndex of the passages, sampling params)."""
    from sac_rag.generation import _prefill
    from sac_rag.grounding import SpanIndex

    method, data, k = argv[1], argv[2], int(argv[3])
    sac, _, items, params = setup(method, data, k, int(argv[5]) if len(argv) > 5 else limit)
    for n, (e, passages) in enumerate(items):
        ctx, segs = prompt(sac, method, e.question, passages)
        with torch.inference_mode():
            state = _prefill(ctx, segs)
        yield n, e, passages, ctx, state, SpanIndex(passages), params
