"""Negative-sentiment spike alerts: the pure detector (records, windows, rule, detector,
events, state), its Prometheus metrics, and the Kafka engine (``engine``, ``sentiwire alert``).

Import the modules themselves; this package imports nothing, so ``streamer.config`` can
import ``streamer.alerting.config`` without pulling in the engine.
"""
