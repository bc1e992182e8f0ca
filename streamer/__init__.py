"""The serving side: Kafka in, batched ONNX Runtime inference, labels and alerts out.

Never imports torch or transformers (tests/test_serving_imports.py).
"""
