"""The field-accuracy table of docs/results.md from the eval JSONs scripts/field_experiments.sh writes:
NAME.corpus.json (corpus test split) and NAME.field.json (field-dev test split, with its long clips).

.venv/bin/python scripts/field_report.py RUNS_DIR NAME [NAME ...]
"""

import json
import sys
from pathlib import Path


def f1(result: dict | None, modality: str) -> str:
    block = (result or {}).get(modality)
    return f"{block['f1_macro']:.3f}" if block and block.get("n") else "-"


def main() -> None:
    runs, names = Path(sys.argv[1]), sys.argv[2:]
    print(
        "| model | corpus test F1 audio / frames / fusion | field-dev test F1 audio / frames / fusion "
        "| long clips: wrong class in music | class lit in background | switch median | missed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        results = {}
        for split in ("corpus", "field"):
            path = runs / f"{name}.{split}.json"
            results[split] = json.loads(path.read_text()) if path.exists() else None
        modalities = ("audio", "video", "fusion")
        corpus = " / ".join(f1(results["corpus"], m) for m in modalities)
        field = " / ".join(f1(results["field"], m) for m in modalities)
        long = ((results["field"] or {}).get("timelines") or {}).get("overall")
        if long:
            tail = (
                f"{100 * long['wrong_share']:.1f} % | {100 * long['background_share']:.1f} % | "
                f"{long['switch_median_seconds'] or 0:.2f} s | {long['missed']} of {long['changes']}"
            )
        else:
            tail = "- | - | - | -"
        print(f"| {name} | {corpus} | {field} | {tail} |")


if __name__ == "__main__":
    main()
