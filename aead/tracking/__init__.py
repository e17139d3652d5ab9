"""Tracking: MLflow runs, their tags, metrics and artifacts (runs.py, artifacts.py), runs'
heartbeats and lost runs (heartbeat.py), signals and stages of a running job (lifecycle.py),
store calls retried while SQLite is busy (retry.py), credentials masked (secrets.py)."""
