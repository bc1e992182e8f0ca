"""``sentiwire retrain``: train a candidate from the served bundle's recipe plus new labels,
score candidate and current on the same holdout, and promote only if no head got worse.

Layout of a models directory (the served path is a symlink, swapped atomically)::

    models/current -> versions/20261125T031502Z      # what the daemons serve (hot reload)
    models/shadow -> versions/20261126T031502Z       # retrain --shadow: model.shadow.path, until promote
    models/versions/<v>/                             # promoted bundles, never modified after the swap
    models/data/<v>/                                 # the new labeled rows <v> was trained / judged on
    models/history.jsonl                             # every decision, promoted or refused, both metric sets

New rows are copied into ``data/<v>`` so the candidate's recipe names files that stay put: the
next retrain of a promoted bundle re-reads exactly what it was trained on.

Modules: ``decision`` (pure: compare the heads' scores), ``registry`` (the models directory:
versions, symlink swap, history, lock, adopt), ``newdata`` (new rows and the holdout),
``corrections`` (labels from a Kafka topic), ``scoring`` (both bundles on the holdout),
``run`` (one retrain, start to end), ``cli`` (the commands), ``shadowing`` (``retrain --shadow``
and a promotion run) and ``promote`` (pure: the shadow's live evidence from the daemons'
/metrics, and the promote-or-refuse decision on it). Module level stays light (the
CLI imports it); torch enters only through ``training.trainer.train``.
"""
