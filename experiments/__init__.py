"""aead's named experiments, shipped in the package as `aead.experiments`; Hydra sees them as
the `experiment` group (hydra_plugins/aead_hydra/experiments_source.py)."""
