"""``sentiwire promote`` without Kafka: the pure decision on plain dicts, the metrics parser on a
real /metrics text, and the command on real bundles with /metrics served from a local HTTP server."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from streamer.errors import ExitCode
from streamer.metrics import Metrics
from training.retrain.promote import (
    EvidenceUnavailable,
    ReplicaEvidence,
    check_replicas,
    combine,
    decide_promotion,
    parse_metrics,
)
from training.retrain.registry import read_history, swap_symlink

# ------------------------------------------------------------------ the decision


def test_every_head_with_enough_agreeing_samples_promotes() -> None:
    d = decide_promotion(
        {"sentiment": {"samples": 1200, "agreement": 0.95}, "topic": {"samples": 1000, "agreement": 0.9}},
        min_samples=1000,
        min_agreement=0.9,
    )
    assert d.promote, d.reason
    assert d.to_json()["heads"]["topic"] == {"samples": 1000, "agreement": 0.9}


def test_too_few_samples_on_one_head_refuses_and_names_it() -> None:
    d = decide_promotion(
        {"sentiment": {"samples": 5000, "agreement": 0.99}, "topic": {"samples": 999, "agreement": 0.99}},
        min_samples=1000,
        min_agreement=0.9,
    )
    assert not d.promote
    assert "too few samples" in d.reason
    assert "topic 999" in d.reason
    assert "sentiment" not in d.reason


def test_low_agreement_refuses_with_the_numbers() -> None:
    d = decide_promotion(
        {"sentiment": {"samples": 2000, "agreement": 0.8512}, "topic": {"samples": 2000, "agreement": 0.97}},
        min_samples=1000,
        min_agreement=0.9,
    )
    assert not d.promote
    assert "sentiment 0.8512 over 2000 samples" in d.reason
    assert "topic" not in d.reason


def test_a_head_never_compared_or_no_head_at_all_refuses() -> None:
    d = decide_promotion({"sentiment": {"samples": 0, "agreement": None}}, min_samples=0, min_agreement=0.0)
    assert not d.promote
    assert "sentiment 0" in d.reason
    assert not decide_promotion({}, min_samples=0, min_agreement=0.0).promote


def test_replicas_sum_samples_and_weight_agreement_by_them() -> None:
    a = ReplicaEvidence("a", ("m", "v2"), ("m", "v1"), {"sentiment": 300.0}, {"sentiment": 1.0})
    b = ReplicaEvidence("b", ("m", "v2"), ("m", "v1"), {"sentiment": 100.0}, {"sentiment": 0.6})
    (head,) = combine([a, b], ["sentiment"])
    assert head.samples == 400
    assert head.agreement == pytest.approx((300 * 1.0 + 100 * 0.6) / 400)
    (missing,) = combine([a], ["topic"])
    assert (missing.samples, missing.agreement) == (0, None)


# ------------------------------------------------------------------ the metrics text


def _metrics_text(
    *, shadow: str | None = "v2", served: str = "v1", compared: int = 10, agree: int = 9
) -> str:
    """A real /metrics exposition: the daemon's own Metrics, filled the way streamer/shadow.py does."""
    m = Metrics(CollectorRegistry())
    m.set_model("m", served, "CPUExecutionProvider", "fp32")
    if shadow is not None:
        m.shadow_info.labels(name="m", version=shadow).set(1)
        m.shadow_reloads.labels(result="success").inc()
        for head in ("sentiment", "topic"):
            m.shadow_compared.labels(head=head, live="a", shadow="a").inc(agree)
            m.shadow_compared.labels(head=head, live="a", shadow="b").inc(compared - agree)
            m.shadow_agreement.labels(head=head).set(agree / compared)
    return generate_latest(m.registry).decode()


def test_parse_a_real_metrics_text() -> None:
    r = parse_metrics("u", _metrics_text(compared=40, agree=30))
    assert r.shadow == ("m", "v2")
    assert r.served == ("m", "v1")
    assert r.samples == {"sentiment": 40.0, "topic": 40.0}
    assert r.agreement == {"sentiment": 0.75, "topic": 0.75}
    check_replicas([r], ("m", "v2"), ("m", "v1"))  # about this shadow beside this served model


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_metrics_text(shadow=None), "no shadow loaded"),
        (_metrics_text(shadow="v9"), "shadow is m v9"),
        (_metrics_text(served="v0"), "serves m v0"),
    ],
)
def test_evidence_about_another_model_is_unavailable(text: str, message: str) -> None:
    with pytest.raises(EvidenceUnavailable, match=message):
        check_replicas([parse_metrics("u", text)], ("m", "v2"), ("m", "v1"))


def test_a_page_that_is_not_prometheus_text_is_unavailable() -> None:
    with pytest.raises(EvidenceUnavailable, match="not a Prometheus text"):
        parse_metrics("u", "<html>\n<body>not metrics {{</body>\n")


# ------------------------------------------------------------------ the command


@contextlib.contextmanager
def _serving(text: str) -> Iterator[str]:
    """A /metrics URL answering ``text``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def models(tmp_path: Path, tiny_bundle_factory: Callable[..., Path]) -> Path:
    """models/current -> versions/v1, models/shadow -> versions/v2 (tiny bundles named sentiwire-tiny)."""
    root = tmp_path / "models"
    for version, link in (("v1", "current"), ("v2", "shadow")):
        swap_symlink(root / link, tiny_bundle_factory(version, root / "versions" / version))
    return root


def _text(compared: int, agree: int, shadow: str = "v2") -> str:
    """The metrics of a daemon serving v1 and shadowing ``shadow``, both named like the tiny bundles."""
    return _metrics_text(shadow=shadow, compared=compared, agree=agree).replace(
        'name="m"', 'name="sentiwire-tiny"'
    )


def _promote(models: Path, *args: str) -> tuple[int, str]:
    from sentiwire.cli import _register, app

    _register()
    r = CliRunner().invoke(
        app, ["promote", "--served", str(models / "current"), "--shadow", str(models / "shadow"), *args]
    )
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_promote_swaps_the_served_link_and_records_it(models: Path) -> None:
    with _serving(_text(600, 600)) as a, _serving(_text(600, 540)) as b:
        code, out = _promote(models, "--metrics-url", a, "--metrics-url", b)
    assert code == 0, out
    assert out.startswith("PROMOTED: v2 (was v1)")
    assert (models / "current").resolve() == (models / "versions" / "v2").resolve()
    assert (models / "shadow").resolve() == (models / "versions" / "v2").resolve()  # kept: daemons need it
    (rec,) = read_history(models / "history.jsonl")
    assert rec["event"] == "promote"
    assert rec["decision"]["promote"] is True
    assert rec["decision"]["heads"]["sentiment"] == {"samples": 1200, "agreement": pytest.approx(0.95)}
    assert [r["url"] for r in rec["replicas"]] == [a, b]
    code, out = _promote(models, "--metrics-url", a)  # again: the shadow is the served version now
    assert code == 0, out
    assert out.startswith("NOTHING TO DO:")
    assert len(read_history(models / "history.jsonl")) == 1


def test_low_agreement_refuses_with_exit_4_and_keeps_both_links(models: Path) -> None:
    with _serving(_text(2000, 1500)) as url:
        code, out = _promote(models, "--metrics-url", url)
    assert code == ExitCode.REFUSED, out
    assert "REFUSED: v2 stays a shadow, v1 keeps serving" in out
    assert "sentiment 0.7500" in out
    assert (models / "current").resolve().name == "v1"
    assert (models / "shadow").resolve().name == "v2"
    (rec,) = read_history(models / "history.jsonl")
    assert rec["decision"]["promote"] is False
    assert rec["candidate"]["version"] == "v2"


def test_force_promotes_on_refused_evidence_and_says_so(models: Path) -> None:
    with _serving(_text(10, 1)) as url:
        code, out = _promote(models, "--metrics-url", url, "--force")
    assert code == 0, out
    assert "forced (would refuse: too few samples" in out
    assert (models / "current").resolve().name == "v2"
    assert read_history(models / "history.jsonl")[0]["decision"]["forced"] is True


def test_unreadable_metrics_exit_3_and_record_nothing(models: Path) -> None:
    with _serving("") as url:
        dead = url  # the server is gone once the block ends
    code, out = _promote(models, "--metrics-url", dead)
    assert code == ExitCode.UNAVAILABLE, out
    assert out.startswith("error: ")
    assert "metrics not readable" in out
    assert "Traceback" not in out
    assert (models / "current").resolve().name == "v1"
    assert not (models / "history.jsonl").exists()


def test_a_daemon_running_another_shadow_exits_3(models: Path) -> None:
    with _serving(_text(5000, 5000, shadow="v3")) as url:
        code, out = _promote(models, "--metrics-url", url)
    assert code == ExitCode.UNAVAILABLE, out
    assert "shadow is sentiwire-tiny v3" in out
    assert (models / "current").resolve().name == "v1"


def test_bad_usage_exits_2(models: Path) -> None:
    code, out = _promote(models)  # no --metrics-url, no --force
    assert code == ExitCode.USAGE
    assert "--metrics-url is needed" in out
    (models / "shadow").unlink()
    code, out = _promote(models, "--force")
    assert code == ExitCode.USAGE
    assert "no shadow link there" in out
