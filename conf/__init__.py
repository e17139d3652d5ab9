"""aead's Hydra configuration, shipped in the package as `aead.conf` (Hydra: pkg://aead.conf).
The `experiment` group comes from experiments/ (hydra_plugins/aead_hydra/experiments_source.py).
"""
