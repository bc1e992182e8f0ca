"""sentiwire: real-time text classification on Kafka.

This package only holds the command-line entry point. The serving code lives in
``streamer`` and the offline training code in ``training``; ``training`` depends on
``streamer`` and never the reverse.
"""

__version__ = "0.1.0"
