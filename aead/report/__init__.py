"""Reports: `python -m aead.report` (cli.py) reads a sweep from MLflow and writes the report
(sweep.py), with the one-class benchmark's tables beside the published figures (one_class.py)."""
