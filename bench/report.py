"""The bench's results: ratios against the targets, the markdown table, the JSON + markdown files."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamer.enums import Variant


def fmt(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{x:,.{digits}f}" if isinstance(x, int | float) else str(x)


def per_cpu(rate: Any, cores: Any) -> float | None:
    """Messages per CPU-second: less sensitive than msg/s to how much CPU a shared machine gave."""
    if isinstance(rate, int | float) and isinstance(cores, int | float) and cores > 0:
        return float(rate) / float(cores)
    return None


def markdown(res: dict[str, Any]) -> str:
    """The results table, the ratios, the ORT details and the soak, as markdown."""
    ort = res.get("ort", {}).get("variants", {})
    rows = []
    for variant, v in ort.items():
        best = v["limit"]
        rows.append(
            [
                f"1. ONNX Runtime alone (batch {best['batch_size']}, {best['mode']})",
                variant,
                fmt(best["msgs_per_s"]),
                "–",
                "–",
                "–",
                fmt(best["cpu_cores"], 2),
                fmt(per_cpu(best["msgs_per_s"], best["cpu_cores"])),
                fmt(res["ort"].get("peak_rss_mb")),
            ]
        )
    for r in res.get("systems", []):
        lat = r.get("latency", {})
        rows.append(
            [
                r["system"],
                r.get("variant") or "",
                fmt(r.get("msgs_per_s")),
                fmt(lat.get("p50_ms")),
                fmt(lat.get("p95_ms")),
                fmt(lat.get("p99_ms")),
                fmt(r.get("cpu_cores"), 2),
                fmt(per_cpu(r.get("msgs_per_s"), r.get("cpu_cores"))),
                fmt(r.get("peak_rss_mb")),
            ]
        )
    head = (
        "| system | variant | msg/s | p50 ms | p95 ms | p99 ms | CPU cores | msg per CPU-s | peak RSS MiB |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if res.get("ratios"):
        lines += ["", "| ratio | value | target |", "|---|---:|---|"]
        lines += [f"| {k} | {fmt(v, 2)}x | {res['targets'].get(k, '')} |" for k, v in res["ratios"].items()]
    if res.get("latency_check"):
        c = res["latency_check"]
        lines += [
            "",
            f"Latency target at half rate: p99 {fmt(c['p99_ms'])} ms vs max_wait_ms {fmt(c['max_wait_ms'])} + "
            f"2 x batch inference {fmt(c['batch_ms'], 1)} ms = {fmt(c['bound_ms'])} ms -> "
            f"{'met' if c['met'] else 'NOT met'}",
        ]
    if "ort" in res:
        pw = res["ort"]["padding_waste_mixed"]
        lines += [
            "",
            f"Padding waste, mixed stream (batches of {pw['batch_size']} in arrival order, {pw['batches']} batches): "
            f"{100 * pw['before']:.0f}% before length bucketing, {100 * pw['after']:.0f}% after.",
        ]
        for variant, v in ort.items():
            k = v["kinds"]
            lines.append(
                f"ORT {variant} at batch {v['limit']['batch_size']}: phrasebank {fmt(k['phrasebank']['msgs_per_s'])}, "
                f"tweets {fmt(k['tweets']['msgs_per_s'])}, BBC articles {fmt(k['bbc']['msgs_per_s'])} msg/s; "
                f"mixed {fmt(k['mixed_unbucketed']['msgs_per_s'])} msg/s unbucketed -> "
                f"{fmt(k['mixed_bucketed']['msgs_per_s'])} bucketed."
            )
        lines.append("Batch-size sweeps (batch→msg/s):")
        for variant, v in ort.items():
            for mode, sweep in v["sweeps"].items():
                runs = ", ".join(f"{bs}→{fmt(m['msgs_per_s'])}" for bs, m in sweep.items())
                lines.append(f"- {variant}, {mode}: {runs}")
    if res.get("soak"):
        s = res["soak"]
        lines += [
            "",
            f"Soak ({s['system']}, {fmt(s['seconds'])} s at full rate, {s['n']:,} messages, "
            f"{fmt(s['msgs_per_s'])} msg/s): RSS {fmt(s['rss_mb_at_10_20pct'])} MiB -> {fmt(s['rss_mb_at_end'])} MiB "
            f"({100 * s['rss_growth']:+.1f}%; second half {100 * s.get('rss_growth_second_half', 0.0):+.1f}%), "
            f"peak {fmt(s['peak_rss_mb'])} MiB, lag after {s['lag_after']}.",
        ]
    if res.get("int8_refused"):
        lines += ["", f"sentiwire int8 not run end to end (the daemon refuses it): {res['int8_refused']}"]
    lines += ["", f"Load: before `{res['uptime_before']}`; after `{res.get('uptime_after', '')}`"]
    return "\n".join(lines)


def summarize(res: dict[str, Any], args: argparse.Namespace) -> None:
    """Adds the ratios against the targets and the half-rate latency bound check to ``res``."""
    by_key = {r.get("key"): r for r in res["systems"] if "msgs_per_s" in r}
    ort = res.get("ort", {}).get("variants", {})
    ratios: dict[str, float] = {}
    targets: dict[str, str] = {}
    naive = by_key.get("naive", {}).get("msgs_per_s")
    for variant in Variant:
        sw = by_key.get(f"sentiwire-{variant}", {}).get("msgs_per_s")
        if sw and variant in ort:
            best = ort[variant]["limit"]
            ratios[f"sentiwire {variant} / ORT {variant} limit"] = sw / best["msgs_per_s"]
            targets[f"sentiwire {variant} / ORT {variant} limit"] = ">= 0.85 (int8, short texts)"
            sw_eff = per_cpu(sw, by_key[f"sentiwire-{variant}"].get("cpu_cores"))
            ort_eff = per_cpu(best["msgs_per_s"], best.get("cpu_cores"))
            if sw_eff and ort_eff:
                key = f"sentiwire {variant} / ORT {variant} limit, per CPU-second"
                ratios[key] = sw_eff / ort_eff
                targets[key] = "(same, normalised for the CPU each got)"
        if sw and naive:
            ratios[f"sentiwire {variant} / naive peer"] = sw / naive
            targets[f"sentiwire {variant} / naive peer"] = ">= 6"
    batched = by_key.get("batched", {}).get("msgs_per_s")
    if batched and by_key.get("sentiwire-int8"):
        ratios["sentiwire int8 / batched PyTorch peer"] = by_key["sentiwire-int8"]["msgs_per_s"] / batched
    res["ratios"], res["targets"] = ratios, targets
    # The latency bound for the graph the daemon served: int8, or fp32 where the bundle refuses int8.
    served = Variant.INT8 if "sentiwire-int8" in by_key else Variant.FP32
    int8 = by_key.get(f"sentiwire-{served}")
    ort8 = ort.get(served)
    daemon_sweep = ort8["sweeps"].get(ort8["daemon_mode"], {}) if ort8 else {}
    if int8 and str(args.batch_size) in daemon_sweep:
        # One batch's inference time as the daemon runs it: its workers/threads, a full padded batch.
        batch_ms = daemon_sweep[str(args.batch_size)]["ms_per_batch"]
        bound = args.max_wait_ms + 2 * batch_ms
        p99 = int8["latency"]["p99_ms"]
        res["latency_check"] = {
            "variant": str(served),
            "p99_ms": p99,
            "max_wait_ms": args.max_wait_ms,
            "batch_ms": batch_ms,
            "bound_ms": bound,
            "met": p99 is not None and p99 <= bound,
        }


def write(res: dict[str, Any], out_dir: Path) -> tuple[Path, str]:
    """``bench-<UTC stamp>.json`` and ``.md`` in ``out_dir``; the JSON path and the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_json = out_dir / f"bench-{stamp}.json"
    out_json.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    md = markdown(res)
    (out_dir / f"bench-{stamp}.md").write_text(md + "\n")
    return out_json, md
