"""Prometheus metrics of the daemon (prefix ``sentiwire_``).

Registered on the registry given (the default REGISTRY in production, so the alert engine's
metrics are served from the same /metrics); tests pass a fresh CollectorRegistry.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        self.registry = registry
        self.consumed = Counter("sentiwire_messages_consumed", "Input records fetched", ["topic"], registry=r)
        self.fetch_errors = Counter(
            "sentiwire_fetch_errors",
            "Fetched record batches the client could not decode (the daemon stops on one)",
            ["error"],
            registry=r,
        )
        self.published = Counter(
            "sentiwire_messages_published", "Label records acknowledged by the broker", ["topic"], registry=r
        )
        self.dead_lettered = Counter(
            "sentiwire_messages_dead_lettered",
            "Input records published to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.truncated = Counter(
            "sentiwire_messages_truncated", "Texts cut to the model's max_length tokens", registry=r
        )
        self.batches = Counter("sentiwire_batches", "Batches run through the model", registry=r)
        self.cache_hits = Counter(
            "sentiwire_cache_hits", "Texts labeled from the response cache, without inference", registry=r
        )
        self.cache_misses = Counter(
            "sentiwire_cache_misses", "Texts the response cache did not know", registry=r
        )
        self.cache_evictions = Counter(
            "sentiwire_cache_evictions", "Response cache entries dropped for room (LRU)", registry=r
        )
        self.cache_entries = Gauge("sentiwire_cache_entries", "Entries in the response cache", registry=r)
        self.cache_bytes = Gauge(
            "sentiwire_cache_bytes", "Estimated bytes held by the response cache", registry=r
        )
        self.batch_size = Histogram(
            "sentiwire_batch_size", "Messages per batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.tokenize_seconds = Histogram(
            "sentiwire_tokenize_seconds", "Tokenization time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "sentiwire_inference_seconds", "ONNX Runtime time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "sentiwire_end_to_end_seconds",
            "Input record timestamp to label acknowledged by the broker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.processing_seconds = Histogram(
            "sentiwire_processing_seconds",
            "Record fetched to label acknowledged by the broker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "sentiwire_tokens", "Tokens fed to the model; kind=padding is waste", ["kind"], registry=r
        )
        self.in_flight = Gauge(
            "sentiwire_in_flight_messages", "Records fetched and not yet acknowledged", registry=r
        )
        self.paused = Gauge(
            "sentiwire_fetch_paused", "1 while fetching is paused by backpressure", registry=r
        )
        self.consumer_lag = Gauge(
            "sentiwire_consumer_lag",
            "High watermark minus committed position, per owned partition",
            ["topic", "partition"],
            registry=r,
        )
        self.predictions = Counter(
            "sentiwire_predictions", "Predicted labels by head", ["head", "label"], registry=r
        )
        self.model_info = Gauge(
            "sentiwire_model_info",
            "The model being served (value 1)",
            ["name", "version", "provider", "variant"],
            registry=r,
        )
        self.runtime_info = Gauge(
            "sentiwire_model_runtime_info",
            "The runtime serving the model and its precision (value 1)",
            ["runtime", "precision", "provider"],
            registry=r,
        )
        self.model_reloads = Counter(
            "sentiwire_model_reloads", "Hot-reload attempts by result", ["result"], registry=r
        )
        self.ready = Gauge(
            "sentiwire_ready", "1 when the model is loaded and partitions are assigned", registry=r
        )
        self.commits = Counter("sentiwire_commits", "Offset commits by result", ["result"], registry=r)
        self.transactions = Counter(
            "sentiwire_transactions", "Kafka transactions (exactly_once) by result", ["result"], registry=r
        )
        self.rebalances = Counter(
            "sentiwire_rebalances", "Partitions revoked / assigned events", ["event"], registry=r
        )

        # Drift of the served stream against the bundle's reference profile (streamer/drift.py).
        self.drift_enabled = Gauge(
            "sentiwire_drift_enabled", "1 while the served bundle has a reference profile", registry=r
        )
        self.drift_window = Gauge(
            "sentiwire_drift_window_messages", "Messages in the drift window now", registry=r
        )
        self.drift_reference = Gauge(
            "sentiwire_drift_reference_messages", "Dev texts the reference profile was built on", registry=r
        )
        self.drift_label_js = Gauge(
            "sentiwire_drift_label_js",
            "Label mix: Jensen-Shannon distance window vs reference",
            ["head"],
            registry=r,
        )
        self.drift_confidence_psi = Gauge(
            "sentiwire_drift_confidence_psi",
            "Top-class probability: PSI window vs reference",
            ["head"],
            registry=r,
        )
        self.drift_entropy_psi = Gauge(
            "sentiwire_drift_entropy_psi", "Normalized entropy: PSI window vs reference", ["head"], registry=r
        )
        self.drift_truncation = Gauge(
            "sentiwire_drift_truncation_rate", "Share of texts truncated", ["source"], registry=r
        )
        self.drift_unknown = Gauge(
            "sentiwire_drift_unknown_token_share", "Share of unknown tokens", ["source"], registry=r
        )
        self.drift_breach = Gauge(
            "sentiwire_drift_breach",
            "1 while a statistic is over its threshold (before hysteresis)",
            ["statistic", "head"],
            registry=r,
        )
        self.drift_drifting = Gauge(
            "sentiwire_drift_drifting", "1 while the state is drifting (after hysteresis)", registry=r
        )
        self.drift_transitions = Counter(
            "sentiwire_drift_transitions", "Drift state changes, by the state entered", ["state"], registry=r
        )

        # A shadow bundle on sampled messages (streamer/shadow.py); never published.
        self.shadow_info = Gauge(
            "sentiwire_shadow_info",
            "The shadow bundle being compared (value 1)",
            ["name", "version"],
            registry=r,
        )
        self.shadow_compared = Counter(
            "sentiwire_shadow_compared",
            "Sampled messages by head, live label and shadow label (the confusion counts)",
            ["head", "live", "shadow"],
            registry=r,
        )
        self.shadow_agreement = Gauge(
            "sentiwire_shadow_agreement",
            "Share of sampled messages where the shadow's label equals the live one, since it loaded",
            ["head"],
            registry=r,
        )
        self.shadow_confidence = Histogram(
            "sentiwire_shadow_confidence",
            "Top-class probability on the sampled messages, by model (live | shadow)",
            ["head", "model"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            "sentiwire_shadow_dropped",
            "Sampled messages the shadow did not run, by reason (behind, not_loaded, failed)",
            ["reason"],
            registry=r,
        )
        self.shadow_published = Counter(
            "sentiwire_shadow_labels_published",
            "Records sent to output.shadow_labels_topic, by result (ok | failed)",
            ["result"],
            registry=r,
        )
        self.shadow_reloads = Counter(
            "sentiwire_shadow_reloads", "Shadow bundle loads by result", ["result"], registry=r
        )

    def set_model(self, name: str, version: str, provider: str, variant: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, provider=provider, variant=variant).set(1)

    def set_runtime(self, runtime: str, precision: str, provider: str) -> None:
        """Set once at start: runtime and precision follow the config, not the bundle, so a reload keeps them."""
        self.runtime_info.clear()
        self.runtime_info.labels(runtime=runtime, precision=precision, provider=provider).set(1)
