"""aead's additions to Hydra's launcher plugins. Hydra accepts launchers only from the
`hydra_plugins` namespace package and imports it on every start: modules here import their
engine (Ray) lazily, so a plain run neither pays for it nor needs it installed."""
