"""aead's additions to Hydra, as plugins: Hydra accepts launchers and config sources only from
the `hydra_plugins` namespace package, and imports it on every start, so modules here are
cheap to import (Ray is imported only when a Ray sweep launches)."""
