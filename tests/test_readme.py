"""The README's usage snippet runs as written (slow: the embedded model)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_usage_snippet_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    usage = next(b for b in blocks if "SACModel.from_pretrained()" in b and "kv.save(" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-adapter warning, while no adapter ships
        exec(compile(usage, "README.md", "exec"), namespace)
    assert (tmp_path / "tesla.safetensors").exists()
    assert namespace["kv2"].num_anchors == namespace["kv"].num_anchors
    assert namespace["out"].finish_reason in ("eos", "stop", "length")
    assert namespace["out"].usage.anchors == namespace["kv"].num_anchors + namespace["kvs"][1].num_anchors
    ans = namespace["ans"]
    passages = ["The Rhine rises ...", "Nikola Tesla (10 July 1856 ...) was ..."]
    assert ans.span is not None and ans.text == passages[ans.span.passage][ans.span.start : ans.span.end]
