"""Benchmarks (``make bench``): ONNX Runtime limit, peers, sentiwire end to end. Not part of the tests."""
