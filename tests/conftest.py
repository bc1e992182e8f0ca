"""Test-session wiring. Fixtures live in tests/fixtures/, one module per concern.

Pure tests need nothing. Tests marked ``kafka`` use the real single-node broker that
``tests.fixtures.kafka`` starts once per session; ``prometheus`` tests start Debian's
Prometheus; ``train`` tests need the [train] extra.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.bundle",
    "tests.fixtures.kafka",
    "tests.fixtures.prometheus",
]
