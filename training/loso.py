"""Leave-one-source-out: how a recipe does on a source it never trained on.

    python -m training.loso --recipe models/sentiwire-minilm --out models/loso [--minutes 30]

For each dataset of the head's training sources (grouped by directory, so both tweet files
are one source), the bundle's recipe is re-trained with ``--leave-out`` that dataset: its dev
rows are still carved the same way and scored, its training rows are not used. The table
puts each left-out score beside the full recipe's score on the same dev rows. The runs train
without distillation (the teacher saw every source) and export with ``force`` (they are
measurements, not bundles to serve). A finished run is reused, so a stopped job continues.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streamer.errors import ExitCode, SentiwireError, exit_code_for


def groups(recipe: dict[str, Any], head: str) -> dict[str, list[str]]:
    """Dataset directory -> the source names in it, for the head's training sources."""
    from training.data import SourceSpec

    out: dict[str, list[str]] = {}
    for d in recipe["data"]:
        spec = SourceSpec.from_json(d)
        if spec.head == head:
            out.setdefault(Path(spec.path).parent.name or spec.display_name, []).append(spec.display_name)
    return out


def run(
    recipe_path: Path,
    out: Path,
    *,
    head: str = "sentiment",
    minutes: float | None = None,
    only: list[str] | None = None,
) -> dict[str, Any]:
    from streamer.model.bundle import load_bundle
    from training.config import TrainConfig, TrainError
    from training.trainer import train

    base = load_bundle(recipe_path, verify=False)
    recipe = base.manifest.get("recipe")
    if not isinstance(recipe, dict) or "data" not in recipe:
        raise TrainError(f"{recipe_path}: bundle.json has no training recipe")
    full = base.manifest.get("metrics", {}).get(head, {}).get("by_source", {})
    results: dict[str, Any] = {"recipe": str(recipe_path), "head": head, "runs": {}}
    for dataset, names in groups(recipe, head).items():
        if only and dataset not in only:
            continue
        cfg = TrainConfig.from_json(recipe)
        cfg.leave_out, cfg.teacher_logits = [dataset], None
        cfg.output, cfg.version, cfg.name = str(out / dataset), None, f"loso-{dataset}"
        cfg.overwrite, cfg.force = True, True
        cfg.checkpoint_every, cfg.resume = None, False
        if minutes is not None:
            cfg.max_train_minutes = minutes
        done = out / dataset / "bundle.json"
        if done.is_file() and json.loads(done.read_text()).get("recipe", {}).get("leave_out") == [dataset]:
            print(f"loso: {dataset}: reusing {done.parent}", file=sys.stderr)
        else:
            print(f"loso: training without {dataset} ({', '.join(names)})", file=sys.stderr)
            train(cfg)
        metrics = json.loads(done.read_text())["metrics"].get(head, {}).get("by_source", {})
        results["runs"][dataset] = {
            "left_out": names,
            "scores": {n: {"left_out": metrics.get(n), "full": full.get(n)} for n in names},
            "others": {n: m for n, m in metrics.items() if n not in names},
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "loso.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "loso.md").write_text(table(results) + "\n")
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| left out | dev source | n | acc without it | macro-F1 without it | acc full recipe | macro-F1 full recipe |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(m: dict[str, Any] | None, key: str) -> str:
        return f"{m[key]:.3f}" if m else "–"

    for dataset, r in results["runs"].items():
        for name, s in r["scores"].items():
            lo, fu = s["left_out"], s["full"]
            n = (lo or fu or {}).get("n", "")
            lines.append(
                f"| {dataset} | {name} | {n} | {cell(lo, 'accuracy')} | {cell(lo, 'macro_f1')} | "
                f"{cell(fu, 'accuracy')} | {cell(fu, 'macro_f1')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.loso", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, required=True, help="bundle whose recipe is re-trained")
    parser.add_argument("--out", type=Path, default=Path("models/loso"))
    parser.add_argument("--head", default="sentiment")
    parser.add_argument(
        "--minutes", type=float, default=None, help="time budget per run (default: the recipe's)"
    )
    parser.add_argument("--only", action="append", default=None, help="just this dataset (repeatable)")
    args = parser.parse_args(argv)
    try:
        results = run(args.recipe, args.out, head=args.head, minutes=args.minutes, only=args.only)
    except SentiwireError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    print(table(results))
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
