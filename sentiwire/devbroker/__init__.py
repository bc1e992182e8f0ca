"""A real single-node Apache Kafka 4.x broker for development, tests, the demo and benchmarks.

No Docker here, so the broker runs straight from Apache Kafka's jars: Maven fetches them once
from Maven Central (``deploy/kafka/pom.xml``) into a cache (``.kafka/libs``), and every broker
is a plain JVM running ``kafka.Kafka`` in KRaft combined mode (broker + controller) on
loopback. Tests get one per session (``tests/fixtures/kafka.py``); ``sentiwire dev broker``
and ``make kafka`` run one in the foreground.

``jars`` fetches and caches the jars, ``jvm`` builds the JVM command, config and storage,
``broker`` starts, waits for and stops a broker, ``admin`` creates topics on it by bootstrap
string. ``security`` adds a SASL_SSL listener (SCRAM-SHA-512 over TLS, ACLs enforced) with
certificates from ``tls`` and ACLs made by ``acls``.
"""

from sentiwire.devbroker.acls import Acl, create_acls, create_acls_sync, delete_acls, describe_acl
from sentiwire.devbroker.admin import cluster_metadata, create_topics, create_topics_sync
from sentiwire.devbroker.broker import (
    DEFAULT_HEAP,
    BrokerHandle,
    main_foreground,
    running_broker,
    start_broker,
    wait_ready,
)
from sentiwire.devbroker.errors import BrokerError
from sentiwire.devbroker.jars import ensure_jars, kafka_version, libs_dir
from sentiwire.devbroker.security import SaslSsl
from sentiwire.devbroker.tls import TlsFiles, make_broker_tls, make_ca

__all__ = [
    "DEFAULT_HEAP",
    "Acl",
    "BrokerError",
    "BrokerHandle",
    "SaslSsl",
    "TlsFiles",
    "cluster_metadata",
    "create_acls",
    "create_acls_sync",
    "create_topics",
    "create_topics_sync",
    "delete_acls",
    "describe_acl",
    "ensure_jars",
    "kafka_version",
    "libs_dir",
    "main_foreground",
    "make_broker_tls",
    "make_ca",
    "running_broker",
    "start_broker",
    "wait_ready",
]
