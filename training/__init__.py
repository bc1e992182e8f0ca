"""Offline side: fine-tune, evaluate, export and retrain model bundles.

Modules here import torch and transformers lazily, inside functions, so that
``sentiwire --help`` and ``sentiwire serve`` work without the [train] extra.
Training uses ``streamer`` (bundle format, inference); ``streamer`` never uses training.
"""
