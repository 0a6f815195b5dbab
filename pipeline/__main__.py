"""``python -m pipeline``: the classification worker (what ``medroute worker`` runs)."""

from pipeline.worker import main

raise SystemExit(main())
