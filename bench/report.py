"""The bench's results: ratios against the targets, the markdown table, the JSON + markdown files."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamer.enums import Variant
from streamer.model.gate import MIN_AGREEMENT


def fmt(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{x:,.{digits}f}" if isinstance(x, int | float) else str(x)


def per_cpu(rate: Any, cores: Any) -> float | None:
    """Messages per CPU-second: less sensitive than msg/s to how much CPU a shared machine gave."""
    if isinstance(rate, int | float) and isinstance(cores, int | float) and cores > 0:
        return float(rate) / float(cores)
    return None


def raw_runs(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every raw runtime measurement (the ORT limit stage, bench/runtimes.py), the fastest first.

    ``servable``: the daemon would run it: not OpenVINO's fixed-length steps (not a serve
    option), not the int8 graph of a bundle whose export refused it, and agreeing with fp32 on
    >= MIN_AGREEMENT of texts per head where the agreement was measured.
    """
    rt = res.get("runtimes", {})
    agree_of = {(r["runtime"], r["precision"]): r["agreement"] for r in rt.get("rows", [])}
    runs: list[dict[str, Any]] = []
    for variant, v in res.get("ort", {}).get("variants", {}).items():
        lim = v["limit"]
        agree = agree_of.get(("onnxruntime", variant))
        runs.append(
            {
                "runtime": "onnxruntime",
                "precision": variant,
                "setup": f"batch {lim['batch_size']}, {lim['mode']}",
                "msgs_per_s": lim["msgs_per_s"],
                "cpu_cores": lim.get("cpu_cores"),
                "agreement": agree,
                "stage": "ort",
            }
        )
    for r in rt.get("rows", []):
        runs.append(
            {
                "runtime": r["runtime"],
                "precision": r["precision"],
                "setup": f"batch {r['batch_size']}, {r['layout']} (batches at once x threads), length-bucketed",
                "msgs_per_s": r["msgs_per_s"],
                "cpu_cores": r.get("cpu_cores"),
                "agreement": r["agreement"],
                "stage": "runtimes",
            }
        )
    for run in runs:
        agree = run["agreement"]
        run["servable"] = (
            run["runtime"] in ("onnxruntime", "openvino")
            and not (run["precision"] == "int8" and res.get("int8_refused"))
            and (not agree or min(agree.values()) >= MIN_AGREEMENT)
        )
    return sorted(runs, key=lambda r: -float(r["msgs_per_s"]))


def best_per_config(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fastest run of each runtime x precision (``runs`` is sorted fastest first)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for r in runs:
        if (r["runtime"], r["precision"]) not in seen:
            seen.add((r["runtime"], r["precision"]))
            out.append(r)
    return out


def min_agreement(agree: dict[str, float] | None) -> float | None:
    return min(agree.values()) if agree else None


def fmt_agree(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def system_runtime(res: dict[str, Any], r: dict[str, Any]) -> tuple[str, str]:
    """Runtime and precision a measured system ran: the daemon's choice for sentiwire, PyTorch for peers."""
    variant = str(r.get("variant") or "fp32")
    if str(r.get("key", "")).startswith("sentiwire"):
        s = res.get("served", {}).get(variant, {})
        return s.get("runtime", "?"), s.get("precision", variant)
    return "pytorch", variant


def markdown(res: dict[str, Any]) -> str:
    """The results table, the ratios, the raw runtime details and the soak, as markdown."""
    ort = res.get("ort", {}).get("variants", {})
    runs = raw_runs(res)
    agree_of = {(r["runtime"], r["precision"]): r["agreement"] for r in runs if r["agreement"]}
    agree_of.setdefault(("onnxruntime", "fp32"), {"reference": 1.0})
    rows = []
    for r in best_per_config(runs):
        what = "ONNX Runtime alone" if r["runtime"] == "onnxruntime" else "OpenVINO alone"
        # The fastest run of each runtime x precision, from either stage (the limit is the best of both).
        rows.append(
            [
                f"1. {what} ({r['setup']})",
                r["runtime"],
                r["precision"],
                fmt(r["msgs_per_s"]),
                "–",
                "–",
                "–",
                fmt(r["cpu_cores"], 2),
                fmt(per_cpu(r["msgs_per_s"], r["cpu_cores"])),
                fmt_agree(min_agreement(agree_of.get((r["runtime"], r["precision"])))),
                fmt(res["ort"].get("peak_rss_mb")) if r["stage"] == "ort" and "ort" in res else "–",
            ]
        )
    for r in res.get("systems", []):
        lat = r.get("latency", {})
        runtime, precision = system_runtime(res, r)
        agree = agree_of.get((runtime, precision)) if runtime != "pytorch" else None
        rows.append(
            [
                r["system"],
                runtime,
                precision,
                fmt(r.get("msgs_per_s")),
                fmt(lat.get("p50_ms")),
                fmt(lat.get("p95_ms")),
                fmt(lat.get("p99_ms")),
                fmt(r.get("cpu_cores"), 2),
                fmt(per_cpu(r.get("msgs_per_s"), r.get("cpu_cores"))),
                fmt_agree(min_agreement(agree)),
                fmt(r.get("peak_rss_mb")),
            ]
        )
    head = (
        "| system | runtime | precision | msg/s | p50 ms | p95 ms | p99 ms | CPU cores | msg per CPU-s "
        "| agreement with fp32 (worst head) | peak RSS MiB |"
    )
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    for key in ("best_raw", "best_servable_raw"):
        if res.get(key):
            b = res[key]
            what = "any precision" if key == "best_raw" else "what the gates let serve"
            lines.append(
                f"\nBest raw runtime ({what}): {b['runtime']} {b['precision']}, {b['setup']}: "
                f"{fmt(b['msgs_per_s'])} msg/s."
            )
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
                runs_txt = ", ".join(f"{bs}→{fmt(m['msgs_per_s'])}" for bs, m in sweep.items())
                lines.append(f"- {variant}, {mode}: {runs_txt}")
    rt = res.get("runtimes")
    if rt and rt.get("rows"):
        heads = list(rt["rows"][0]["agreement"])
        lines += [
            "",
            "Runtimes x precisions (bench/runtimes.py, length-bucketed batches of short texts):",
            "",
        ]
        lines.append(runtimes_table(rt["rows"], heads))
        for config, why in rt.get("refused", {}).items():
            lines.append(f"\n{config}: not run: {why}")
    if res.get("soak"):
        s = res["soak"]
        lines += [
            "",
            f"Soak ({s['system']}, {fmt(s['seconds'])} s at full rate, {s['n']:,} messages, "
            f"{fmt(s['msgs_per_s'])} msg/s): RSS {fmt(s['rss_mb_at_10_20pct'])} MiB -> {fmt(s['rss_mb_at_end'])} MiB "
            f"({100 * s['rss_growth']:+.1f}%; second half {100 * s.get('rss_growth_second_half', 0.0):+.1f}%), "
            f"peak {fmt(s['peak_rss_mb'])} MiB, lag after {s['lag_after']}.",
        ]
        if s.get("cache"):
            lines.append(cache_line(s["cache"], "Soak"))
    for r in res.get("systems", []):
        if r.get("cache"):
            lines.append(cache_line(r["cache"], r["system"]))
    if res.get("int8_refused"):
        lines += ["", f"sentiwire int8 not run end to end (the daemon refuses it): {res['int8_refused']}"]
    lines += ["", f"Load: before `{res['uptime_before']}`; after `{res.get('uptime_after', '')}`"]
    return "\n".join(lines)


def cache_line(c: dict[str, float], what: str) -> str:
    """Response-cache counters of one daemon run, as one sentence."""
    hits, misses = c.get("hits_total", 0.0), c.get("misses_total", 0.0)
    share = hits / (hits + misses) if hits + misses else 0.0
    return (
        f"Response cache, {what}: {fmt(hits)} hits / {fmt(misses)} misses ({100 * share:.1f}% answered "
        f"without inference), {fmt(c.get('evictions_total'))} evictions, {fmt(c.get('entries'))} entries, "
        f"{fmt(c.get('bytes', 0.0) / 2**20, 1)} MiB at the end."
    )


def runtimes_table(rows: list[dict[str, Any]], heads: list[str]) -> str:
    """bench/runtimes.py's rows as a markdown table (one row per runtime x precision x layout x batch)."""
    head_cols = " | ".join(f"agree {h}" for h in heads)
    out = [
        f"| runtime | precision | layout | batch | msg/s | ms/batch | CPU cores | msg per CPU-s | {head_cols} |",
        "|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(heads),
    ]
    for r in rows:
        agree = " | ".join(f"{100 * r['agreement'][h]:.2f}%" for h in heads)
        out.append(
            f"| {r['runtime']} | {r['precision']} | {r['layout']} | {r['batch_size']} | {r['msgs_per_s']:.0f} "
            f"| {r['ms_per_batch']:.1f} | {r['cpu_cores']:.2f} | {r['msgs_per_cpu_s']:.0f} | {agree} |"
        )
    return "\n".join(out)


def summarize(res: dict[str, Any], args: argparse.Namespace) -> None:
    """Adds the best raw runtimes, the ratios against the targets and the latency bound check to ``res``."""
    by_key = {r.get("key"): r for r in res["systems"] if "msgs_per_s" in r}
    ort = res.get("ort", {}).get("variants", {})
    ratios: dict[str, float] = {}
    targets: dict[str, str] = {}
    runs = raw_runs(res)
    if runs:
        res["best_raw"] = runs[0]
        res["best_servable_raw"] = next((r for r in runs if r["servable"]), None)
    naive = by_key.get("naive", {}).get("msgs_per_s")
    # The daemon's own graph: int8, or fp32 where the bundle refuses int8.
    served = Variant.INT8 if "sentiwire-int8" in by_key else Variant.FP32
    for variant in Variant:
        sw = by_key.get(f"sentiwire-{variant}", {}).get("msgs_per_s")
        if not sw:
            continue
        sw_eff = per_cpu(sw, by_key[f"sentiwire-{variant}"].get("cpu_cores"))
        if variant == served:
            for key, what, target in (
                ("best_raw", "best raw runtime", ">= 0.85"),
                ("best_servable_raw", "best raw runtime the gates let serve", ">= 0.85"),
            ):
                best = res.get(key)
                if best:
                    name = f"sentiwire {variant} / {what} ({best['runtime']} {best['precision']})"
                    ratios[name], targets[name] = sw / best["msgs_per_s"], target
                    best_eff = per_cpu(best["msgs_per_s"], best.get("cpu_cores"))
                    if sw_eff and best_eff:
                        ratios[name + ", per CPU-second"] = sw_eff / best_eff
                        targets[name + ", per CPU-second"] = "(same, normalised for the CPU each got)"
        if variant in ort:
            best = ort[variant]["limit"]
            ratios[f"sentiwire {variant} / ORT {variant} limit"] = sw / best["msgs_per_s"]
            targets[f"sentiwire {variant} / ORT {variant} limit"] = "(same graph, same runtime)"
        if naive:
            ratios[f"sentiwire {variant} / naive peer"] = sw / naive
            targets[f"sentiwire {variant} / naive peer"] = ">= 10"
    batched = by_key.get("batched", {}).get("msgs_per_s")
    sw_served = by_key.get(f"sentiwire-{served}")
    if batched and sw_served:
        ratios[f"sentiwire {served} / batched PyTorch peer"] = sw_served["msgs_per_s"] / batched
    res["ratios"], res["targets"] = ratios, targets
    ort8 = ort.get(served)
    daemon_sweep = ort8["sweeps"].get(ort8["daemon_mode"], {}) if ort8 else {}
    if sw_served and str(args.batch_size) in daemon_sweep:
        # One batch's inference time as the daemon runs it: its workers/threads, a full padded batch.
        batch_ms = daemon_sweep[str(args.batch_size)]["ms_per_batch"]
        bound = args.max_wait_ms + 2 * batch_ms
        p99 = sw_served["latency"]["p99_ms"]
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
