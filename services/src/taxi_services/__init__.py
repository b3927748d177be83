"""ML-taxi services: the `taxi` command and the thin service entrypoints."""
