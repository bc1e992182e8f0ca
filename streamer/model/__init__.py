"""The model side of serving: bundle, tokenizer, runtime session, length buckets, classifier,
loading and hot reload. The runtimes of the speed work plug in behind ``runtime``; everything
else (daemon, ``predict``, ``evaluate``, ``retrain``) goes through ``classifier.Classifier``.
"""
