"""The bench's arithmetic: CPU interpolation, percentiles, ratios and the report table."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bench.ort_limit import pick_limit
from bench.procstats import Sample, Sampler, percentiles
from bench.report import cache_line, markdown, raw_runs, summarize
from bench.systems import cache_counters


def test_cores_interpolates_cpu_between_samples() -> None:
    s = Sampler(pid=0)
    s.samples = [Sample(100.0, 10.0, 50.0), Sample(101.0, 11.5, 60.0), Sample(103.0, 14.5, 70.0)]
    assert s.cores(100.0, 101.0) == pytest.approx(1.5)
    assert s.cores(100.5, 102.0) == pytest.approx((13.0 - 10.75) / 1.5)
    assert s.cores(99.0, 104.0) == pytest.approx(4.5 / 5.0)  # clamped to the first/last sample
    assert s.rss_between(100.5, 103.0) == [60.0, 70.0]


def test_percentiles() -> None:
    p = percentiles([float(i) for i in range(1, 101)])
    assert p["p50_ms"] == pytest.approx(50.5)
    assert p["p99_ms"] == pytest.approx(99.01)
    assert p["max_ms"] == 100.0
    assert percentiles([])["p99_ms"] is None


def _result() -> dict[str, Any]:
    one = {
        "8": {"msgs_per_s": 500.0, "ms_per_batch": 16.0, "cpu_cores": 1.9},
        "32": {"msgs_per_s": 600.0, "ms_per_batch": 40.0, "cpu_cores": 1.9},
    }
    two = {
        "8": {"msgs_per_s": 650.0, "ms_per_batch": 24.0, "cpu_cores": 1.9},
        "32": {"msgs_per_s": 800.0, "ms_per_batch": 30.0, "cpu_cores": 1.9},
    }
    sweeps = {"1 worker x 2 threads, arrival order": one, "2 workers x 1 thread, length-bucketed": two}
    kinds = {
        k: {"msgs_per_s": 100.0}
        for k in ("phrasebank", "tweets", "bbc", "mixed_unbucketed", "mixed_bucketed")
    }
    return {
        "uptime_before": "load average: 0.10",
        "uptime_after": "load average: 1.00",
        "served": {
            "fp32": {"runtime": "onnxruntime", "precision": "fp32"},
            "int8": {"runtime": "onnxruntime", "precision": "int8"},
        },
        "ort": {
            "variants": {
                "int8": {
                    "sweeps": sweeps,
                    "daemon_mode": "1 worker x 2 threads, arrival order",
                    "limit": pick_limit(sweeps),
                    "kinds": kinds,
                }
            },
            "padding_waste_mixed": {"batches": 4, "batch_size": 32, "before": 0.5, "after": 0.1},
            "peak_rss_mb": 300.0,
        },
        "systems": [
            {"key": "naive", "system": "naive peer", "variant": "fp32", "msgs_per_s": 100.0, "latency": {}},
            {
                "key": "sentiwire-int8",
                "system": "sentiwire int8",
                "variant": "int8",
                "msgs_per_s": 720.0,
                "cpu_cores": 1.95,
                "peak_rss_mb": 210.0,
                "latency": {"p50_ms": 20.0, "p95_ms": 60.0, "p99_ms": 85.0},
            },
        ],
    }


def test_ratios_and_latency_bound() -> None:
    res = _result()
    summarize(res, argparse.Namespace(batch_size=32, max_wait_ms=10.0))
    assert res["ratios"]["sentiwire int8 / ORT int8 limit"] == pytest.approx(0.9)
    assert res["ratios"]["sentiwire int8 / naive peer"] == pytest.approx(7.2)
    assert res["targets"]["sentiwire int8 / naive peer"] == ">= 10"
    # Only ONNX Runtime was measured: it is the best raw runtime, servable (int8 not refused).
    assert res["ratios"]["sentiwire int8 / best raw runtime (onnxruntime int8)"] == pytest.approx(0.9)
    assert res["best_servable_raw"]["msgs_per_s"] == 800.0
    check = res["latency_check"]
    # One batch's inference time: a padded batch of 32 run the daemon's way (daemon_mode).
    assert check["bound_ms"] == pytest.approx(90.0)
    assert check["met"] is True
    md = markdown(res)
    assert "| sentiwire int8 | onnxruntime | int8 | 720 | 20 | 60 | 85 | 1.95 | 369 | – | 210 |" in md
    row = (
        "| 1. ONNX Runtime alone (batch 32, 2 workers x 1 thread, length-bucketed) | onnxruntime | int8 "
        "| 800 | – | – | – |"
    )
    assert row + " 1.90 | 421 | – | 300 |" in md
    assert "- int8, 2 workers x 1 thread, length-bucketed: 8→650, 32→800" in md
    assert "50% before length bucketing, 10% after" in md
    assert "-> met" in md


def test_limit_is_the_fastest_run_of_every_sweep() -> None:
    plain = {"1": {"msgs_per_s": 300.0}, "32": {"msgs_per_s": 250.0}}
    assert pick_limit({"a": plain, "b": {"1": {"msgs_per_s": 290.0}, "32": {"msgs_per_s": 280.0}}}) == {
        "msgs_per_s": 300.0,
        "batch_size": 1,
        "mode": "a",
    }
    assert pick_limit({"a": plain, "b": {"1": {"msgs_per_s": 290.0}, "32": {"msgs_per_s": 410.0}}}) == {
        "msgs_per_s": 410.0,
        "batch_size": 32,
        "mode": "b",
    }


def test_a_bundle_refusing_int8_is_benched_as_the_daemon_serves_it() -> None:
    """int8 that failed its export gate: the daemon serves fp32, so the latency bound is fp32's."""
    res = _result()
    res["ort"]["variants"]["fp32"] = res["ort"]["variants"].pop("int8")
    res["systems"][1] = {
        **res["systems"][1],
        "key": "sentiwire-fp32",
        "system": "sentiwire fp32",
        "variant": "fp32",
    }
    res["int8_refused"] = "bundle t 1: its int8 graph failed the export precision gate (moved 1.2 pt)"
    summarize(res, argparse.Namespace(batch_size=32, max_wait_ms=10.0))
    assert res["latency_check"]["variant"] == "fp32"
    assert res["latency_check"]["bound_ms"] == pytest.approx(90.0)
    assert res["ratios"]["sentiwire fp32 / ORT fp32 limit"] == pytest.approx(0.9)
    assert "sentiwire int8 not run end to end (the daemon refuses it): bundle t 1" in markdown(res)


def _runtime_row(runtime: str, precision: str, rate: float, agree: float, batch: int = 32) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "precision": precision,
        "layout": "2x1",
        "batch_size": batch,
        "msgs_per_s": rate,
        "ms_per_batch": 40.0,
        "cpu_cores": 2.0,
        "msgs_per_cpu_s": rate / 2.0,
        "agreement": {"sentiment": agree, "topic": 1.0},
    }


def test_the_limit_is_the_fastest_runtime_and_the_gates_decide_what_counts_as_servable() -> None:
    """The hardware limit is the best of every runtime x precision, not ONNX Runtime alone.

    OpenVINO int8 is the fastest raw run but agrees with fp32 on 97% of labels (the load gate
    refuses it); the length-steps row is not a serve option; the best servable is OpenVINO f32.
    """
    res = _result()
    res["runtimes"] = {
        "rows": [
            _runtime_row("onnxruntime", "fp32", 500.0, 1.0),
            _runtime_row("onnxruntime", "int8", 780.0, 0.996),
            _runtime_row("openvino", "fp32", 1000.0, 1.0),
            _runtime_row("openvino", "int8", 1200.0, 0.97),
            _runtime_row("openvino (length steps)", "fp32", 1300.0, 1.0),
        ],
        "refused": {"openvino:bf16": "this CPU has no AMX or AVX512-BF16"},
    }
    runs = raw_runs(res)
    assert [(r["runtime"], r["precision"], r["servable"]) for r in runs[:4]] == [
        ("openvino (length steps)", "fp32", False),
        ("openvino", "int8", False),
        ("openvino", "fp32", True),
        ("onnxruntime", "int8", True),  # the ORT stage's limit (800), with its measured agreement
    ]
    summarize(res, argparse.Namespace(batch_size=32, max_wait_ms=10.0))
    ratios = res["ratios"]
    assert ratios["sentiwire int8 / best raw runtime (openvino (length steps) fp32)"] == pytest.approx(
        720 / 1300
    )
    key = "sentiwire int8 / best raw runtime the gates let serve (openvino fp32)"
    assert ratios[key] == pytest.approx(0.72)
    assert ratios[key + ", per CPU-second"] == pytest.approx((720 / 1.95) / (1000 / 2.0))
    md = markdown(res)
    assert (
        "| 1. OpenVINO alone (batch 32, 2x1 (batches at once x threads), length-bucketed) | openvino | int8"
        in md
    )
    assert "| sentiwire int8 | onnxruntime | int8 | 720 | 20 | 60 | 85 | 1.95 | 369 | 99.60% | 210 |" in md
    # Every runtime x precision has its fastest run in the table, whichever stage measured it:
    # ONNX Runtime fp32 only in the runtimes stage, int8 faster in the ORT stage (with its RSS).
    fp32_row = "| 1. ONNX Runtime alone (batch 32, 2x1 (batches at once x threads), length-bucketed) "
    assert fp32_row + "| onnxruntime | fp32 | 500 |" in md
    assert "| onnxruntime | int8 | 800 | – | – | – | 1.90 | 421 | 99.60% | 300 |" in md
    assert "| openvino | int8 | 2x1 | 32 | 1200 | 40.0 | 2.00 | 600 | 97.00% | 100.00% |" in md
    assert "openvino:bf16: not run: this CPU has no AMX or AVX512-BF16" in md
    assert "Best raw runtime (what the gates let serve): openvino fp32, batch 32, 2x1" in md


def test_an_int8_graph_refused_at_export_is_never_the_servable_limit() -> None:
    res = _result()
    res["int8_refused"] = "bundle t 1: its int8 graph failed the export precision gate"
    res["runtimes"] = {"rows": [_runtime_row("onnxruntime", "fp32", 500.0, 1.0)], "refused": {}}
    summarize(res, argparse.Namespace(batch_size=32, max_wait_ms=10.0))
    assert res["best_raw"]["precision"] == "int8"  # still the fastest raw run, and reported
    assert res["best_servable_raw"]["precision"] == "fp32"
    assert res["best_servable_raw"]["msgs_per_s"] == 500.0


def test_cache_counters_are_read_from_the_daemons_metrics_page() -> None:
    page = "\n".join(
        [
            "# HELP sentiwire_cache_hits_total Texts labeled from the response cache, without inference",
            "# TYPE sentiwire_cache_hits_total counter",
            "sentiwire_cache_hits_total 300.0",
            "sentiwire_cache_hits_created 1.7e9",
            "sentiwire_cache_misses_total 700.0",
            "sentiwire_cache_evictions_total 5.0",
            "sentiwire_cache_entries 695.0",
            "sentiwire_cache_bytes 2097152.0",
            "sentiwire_batches_total 40.0",
        ]
    )
    counters = cache_counters(page)
    assert counters == {
        "hits_total": 300.0,
        "misses_total": 700.0,
        "evictions_total": 5.0,
        "entries": 695.0,
        "bytes": 2097152.0,
    }
    line = cache_line(counters, "Soak")
    assert (
        "300 hits / 700 misses (30.0% answered without inference), 5 evictions, 695 entries, 2.0 MiB" in line
    )
