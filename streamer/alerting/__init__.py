"""Negative-sentiment spike alerts.

Pure: ``records`` (a labels record), ``clock`` (event time per partition), ``windows``
(buckets), ``rule`` (statistics), ``detector`` (scopes), ``incidents`` (one page per burst),
``events`` and ``state`` (JSON), ``merge`` (event-time order). I/O: ``rebuild`` (start-up
reads), ``publish`` (alert and state records), ``engine`` (the Kafka loop), ``cli``
(``sentiwire alert``); ``metrics``, ``console``, ``config``.

Import the modules themselves; this package imports nothing, so ``streamer.config`` can
import ``streamer.config`` without pulling in the engine.
"""
