"""Session 35's diagnostic: held-out continuation loss of SAC adapters (compress the start of a passage, predict the
rest, as in the LM stage), against the frozen base with no context (`none`) and reading the compressed text itself
(`text`). The passages are SQuAD v1.1 dev part 2 paragraphs, shuffled with seed 35 (read only: a diagnostic, no
training). Float32, one thread.

Usage: .venv/bin/python docs/evals/selection/s35/fidelity.py N ADAPTER|none|text ...
Prints one line per argument: its mean loss per target token, the number of target tokens, the seconds it took."""
import random
import sys
import time

import torch

from sac_rag import SACModel
from sac_rag.training.data import articles
from sac_rag.training.tasks import lm_item
from sac_rag.training.trainer import TrainConfig, _load_spec, item_loss

SQUAD_PART2 = "/work/shared/data/squad/squad-v1.1-dev-part2.json"


def held_out_items(n: int) -> list:
    texts = [p for ps in articles(_load_spec(SQUAD_PART2)).values() for p in ps]
    rng = random.Random(35)
    rng.shuffle(texts)
    items = []
    for t in texts:
        item = lm_item(t, rng)
        if item is not None:
            items.append(item)
        if len(items) == n:
            break
    return items


def base_loss(sac: SACModel, items: list, cfg: TrainConfig, with_text: bool) -> tuple[float, int]:
    """The frozen base (causal, no adapter) predicting each continuation after BOS, or after BOS + template + prefix."""
    total, n = 0.0, 0
    for item in items:
        prefix, rest = item.passages[0], item.queries[0][1]
        target = sac.tokenize(rest)[: cfg.max_target_tokens]
        context = [sac.tokenizer.bos_token_id]
        if with_text:
            context += sac.tokenize(sac.config.template + prefix)[: cfg.max_passage_tokens]
        with sac.decoder_mode():
            logits = sac.model(input_ids=torch.tensor([context + target])).logits[0, len(context) - 1 : -1].float()
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum"))
        n += len(target)
    return total, n


def main() -> None:
    n, names = int(sys.argv[1]), sys.argv[2:]
    torch.set_num_threads(1)
    items = held_out_items(n)
    cfg = TrainConfig(stage="lm", qa_data=(SQUAD_PART2,), dtype="float32")
    for name in names:
        t0 = time.time()
        with torch.no_grad():
            if name in ("none", "text"):
                sac = SACModel.from_pretrained(adapter=None, dtype="float32")
                total, tokens = base_loss(sac, items, cfg, with_text=name == "text")
            else:
                sac = SACModel.from_pretrained(adapter=name, dtype="float32")
                total, tokens = 0.0, 0
                for item in items:
                    loss, k = item_loss(sac, item, cfg)
                    total, tokens = total + float(loss) * k, tokens + k
        print(f"{name}\t{total / tokens:.4f}\t{tokens} tokens\t{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
