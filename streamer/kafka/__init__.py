"""Kafka plumbing every command shares: client settings, topic admin, reading a topic to its end.

``clients`` maps our config to aiokafka arguments (the only place that does), ``admin``
creates topics and waits for their leaders, ``reader`` reads assigned partitions up to the
end offsets seen at start. Public aiokafka APIs only.
"""
