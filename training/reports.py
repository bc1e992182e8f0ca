"""What a training run shows and leaves behind: stderr progress lines and the report files.

``write_reports`` writes, per head, the dev classification report (JSON), the confusion
matrix and the training curves (PNG) that the bundle keeps under ``report/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summary_line(metrics: dict[str, Any]) -> str:
    """One line of per-head dev accuracy and macro-F1."""
    return "  ".join(f"{h}: acc {m['accuracy']:.3f} F1 {m['macro_f1']:.3f}" for h, m in metrics.items())


def write_reports(report_dir: Path, metrics: dict[str, Any], curves: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for head, m in metrics.items():
        d = report_dir / head
        d.mkdir(parents=True, exist_ok=True)
        (d / "classification_report.json").write_text(json.dumps(m, indent=2) + "\n")
        labels, cm = m["labels"], np.asarray(m["confusion_matrix"])
        size = max(4.0, 0.45 * len(labels) + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")  # fmt: skip
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{head}: dev acc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}")
        fig.tight_layout()
        fig.savefig(d / "confusion_matrix.png", dpi=110)
        plt.close(fig)

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        steps, losses = curves["loss_steps"], curves["head_loss"].get(head, [])
        if losses:
            a1.plot(steps[: len(losses)], losses, lw=0.8)
        a1.set_xlabel("step")
        a1.set_ylabel(f"{head} train loss (EMA)")
        ev = curves["evals"]
        a2.plot(
            [e["step"] for e in ev],
            [e["metrics"][head]["macro_f1"] for e in ev],
            marker="o",
            label="macro-F1",
        )
        a2.plot(
            [e["step"] for e in ev],
            [e["metrics"][head]["accuracy"] for e in ev],
            marker="s",
            label="accuracy",
        )
        a2.set_xlabel("step")
        a2.set_ylabel("dev")
        a2.legend()
        fig.suptitle(f"{head}: training curves")
        fig.tight_layout()
        fig.savefig(d / "training_curves.png", dpi=110)
        plt.close(fig)
