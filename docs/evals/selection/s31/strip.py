"""Drop the fetched sources' text (questions, gold answers) from session 31's eval records; ids, predictions and
scores stay. The questions and answers are in the source files, which are not committed."""
import json, pathlib, sys
for p in pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/evals/selection/s31").glob("*.json"):
    d = json.loads(p.read_text())
    for r in d["records"]:
        r.pop("question", None)
        r.pop("answers", None)
    p.write_text(json.dumps(d, indent=1, ensure_ascii=False))
