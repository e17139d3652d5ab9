"""aead's Hydra configuration, shipped in the package as `aead.conf` (Hydra: pkg://aead.conf).

Importing it (Hydra does, to read config.yaml) registers the config source that serves
experiments/ as the `experiment` group: Hydra finds plugins by scanning the hydra_plugins
namespace, which an editable install hides from that scan.
"""

from hydra.core.plugins import Plugins

from hydra_plugins.aead_hydra.experiments_source import ExperimentsConfigSource

Plugins.instance().register(ExperimentsConfigSource)
