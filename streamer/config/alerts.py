"""Settings of the negative-sentiment spike detector and its engine.

Embedded in the daemon's ``Settings`` as the ``alerts`` section (README "Configuration"), so the
same YAML drives ``sentiwire serve`` (engine in-process) and ``sentiwire alert`` (own process).
"""

from __future__ import annotations

import hashlib
import json
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AlertsConfig(BaseModel):
    """Windows and thresholds; defaults suit a desk watching minutes against hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    alerts_topic: str = "sentiwire.alerts"
    # Compacted: one record per scope with its published alert state and cooldown.
    state_topic: str = "sentiwire.alerts.state"
    # The engine reads every partition of the labels topic itself; this names its client only.
    client_id: str = "sentiwire-alerts"
    # Create the alerts and state topics when missing (1 partition each). Production clusters
    # usually pre-create them; set the replication factor to the cluster's (e.g. 3).
    create_topics: bool = True
    topic_replication_factor: int = Field(1, ge=1)

    # Event-time windows (seconds). Scores are evaluated on bucket boundaries.
    short_window_s: float = Field(300.0, gt=0)
    baseline_window_s: float = Field(21600.0, gt=0)
    bucket_s: float = Field(30.0, gt=0)
    allowed_lateness_s: float = Field(60.0, ge=0)

    # Firing rule: n >= min_count, share >= absolute_floor and the one-sided Wilson lower
    # bound of the short-window share (at `confidence`) > baseline + min_lift.
    confidence: float = Field(0.99, gt=0.5, lt=1.0)
    min_count: float = Field(20.0, gt=0)
    absolute_floor: float = Field(0.4, ge=0, le=1)
    min_lift: float = Field(0.1, ge=0, le=1)
    # Hysteresis: a firing scope resolves only once the lower bound falls to baseline + resolve_lift.
    resolve_lift: float = Field(0.0, ge=0, le=1)
    cooldown_s: float = Field(900.0, ge=0)

    # Baseline of a sparse scope is shrunk towards the global baseline with this many
    # pseudo-messages (empirical Bayes), so a new ticker is not judged against 0/0.
    baseline_prior_weight: float = Field(50.0, ge=0)
    # Used as the global baseline until the global scope has seen anything.
    default_baseline_share: float = Field(0.15, ge=0, le=1)

    # Confidence weighting: negatives scored below this count as not negative (0 = off).
    min_negative_confidence: float = Field(0.0, ge=0, le=1)

    # Scopes.
    scope_global: bool = True
    scope_topics: bool = True
    scope_entities: bool = True
    topic_head: str = "topic"
    sentiment_head: str = "sentiment"
    negative_label: str = "negative"
    # Canonical entity -> aliases matched as whole words, case-insensitive ("TSLA": ["Tesla"]).
    entity_aliases: dict[str, list[str]] = Field(default_factory=dict)
    max_entities_per_message: int = Field(10, ge=1)
    # Bounded memory: entity scopes kept (least-recently-seen evicted first).
    max_entities: int = Field(1000, ge=1)
    # Prometheus series per scope kind for entities (most active first; firing always kept).
    max_metric_entities: int = Field(50, ge=0)
    max_examples: int = Field(3, ge=0)
    example_chars: int = Field(280, ge=0)

    # Engine: with no new labels for this long (wall clock), event time is advanced to
    # now - allowed_lateness so that a quiet stream still resolves its alerts.
    idle_advance_s: float = Field(30.0, gt=0)

    # Event time per lane: one input partition (the label's source) as seen through one labels
    # partition. The clock is the minimum of the lanes' watermarks, so a partition worked behind
    # the others is on time, not late. A lane that delivered nothing for `idle_partition_s`
    # (wall clock) stops holding the clock back - unless the serving group (input.group_id) still
    # has a backlog on its input partition, or the engine has not read its labels partition to
    # the end: then it is waited for, until the group's committed offset there has not moved for
    # `stalled_partition_s`. One more than `max_partition_lag_s` of event time behind the fastest
    # is not waited for (its records behind the clock are `capped`).
    idle_partition_s: float = Field(30.0, gt=0)
    stalled_partition_s: float = Field(300.0, gt=0)
    # How often the engine reads the serving group's committed and the input end offsets.
    backlog_poll_s: float = Field(5.0, gt=0)
    max_partition_lag_s: float = Field(21600.0, gt=0)
    # Bounded memory: lanes kept, and input partitions whose seen source offsets are kept for
    # dropping redelivered labels (least recently seen forgotten first, each), and ranges of
    # seen offsets per input partition (oldest forgotten first).
    max_lanes: int = Field(1024, ge=1)
    dedup_ranges_per_partition: int = Field(64, ge=1)

    # An alert decided this long after its window closed (wall clock minus event time) is
    # marked `backfill`: it is about the past (a backlog caught up, a lagging replica).
    backfill_after_s: float = Field(120.0, ge=0)
    # One incident per burst: a firing scope explained by an open incident's scope (or that
    # explains it) joins that incident as a related scope instead of paging on its own.
    group_incidents: bool = True
    # An incident opened by a topic or the market waits this many buckets of event time before
    # it pages, for a ticker that explains it (which then opens it). An entity pages at once.
    incident_grace_buckets: int = Field(2, ge=0)

    @field_validator("entity_aliases")
    @classmethod
    def _aliases_not_blank(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for entity, aliases in value.items():
            if not entity.strip():
                raise ValueError("entity_aliases: blank entity name")
            for alias in aliases:
                if not alias.strip():
                    raise ValueError(f"entity_aliases[{entity!r}]: blank alias")
        return value

    @model_validator(mode="after")
    def _windows_consistent(self) -> Self:
        if self.baseline_window_s <= self.short_window_s:
            raise ValueError(
                f"baseline_window_s ({self.baseline_window_s}) must be longer than short_window_s ({self.short_window_s})"
            )
        if self.short_window_s < self.bucket_s:
            raise ValueError(
                f"short_window_s ({self.short_window_s}) must be at least bucket_s ({self.bucket_s})"
            )
        if self.resolve_lift > self.min_lift:
            raise ValueError(f"resolve_lift ({self.resolve_lift}) must not exceed min_lift ({self.min_lift})")
        if self.max_partition_lag_s < self.allowed_lateness_s:
            raise ValueError(
                f"max_partition_lag_s ({self.max_partition_lag_s}) must be at least allowed_lateness_s ({self.allowed_lateness_s})"
            )
        if self.max_metric_entities > self.max_entities:
            raise ValueError(
                f"max_metric_entities ({self.max_metric_entities}) must not exceed max_entities ({self.max_entities})"
            )
        return self

    def detector_fingerprint(self) -> str:
        """Hash of what shapes detector state, so a snapshot is never restored into other windows."""
        keys = ("short_window_s", "baseline_window_s", "bucket_s")
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
