"""The `experiment` config group, served from the package `aead.experiments` (the repository's
top-level `experiments/` folder, shipped in the wheel): Hydra names a group after its folder,
and the project keeps named experiments in `experiments/`, not in `conf/experiment/`. This
config source mounts that package as the group, so there is one copy of each file and no
symlink. The search path plugin below adds it wherever aead's own configs are searched
(so `--help` lists the experiments too), and nowhere else.
"""

from __future__ import annotations

from importlib import resources

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "experiment"
AEAD_CONFIGS = "pkg://aead.conf"
EXPERIMENTS = "aead-experiments://aead.experiments"


class ExperimentsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        paths = [entry.path for entry in search_path.get_path()]
        if AEAD_CONFIGS in paths and EXPERIMENTS not in paths:
            search_path.append(provider="aead", path=EXPERIMENTS)


class ExperimentsConfigSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return "aead-experiments"

    def _files(self):
        return resources.files(self.path)

    def _inside(self, config_path: str) -> str | None:
        """The file name inside the package for a path under the group; None outside it."""
        config_path = config_path.strip("/")
        if config_path == GROUP:
            return ""
        if config_path.startswith(GROUP + "/"):
            return config_path[len(GROUP) + 1 :]
        return None

    def available(self) -> bool:
        try:
            return self._files().joinpath("__init__.py").is_file()
        except (ModuleNotFoundError, TypeError, ValueError):
            return False

    def load_config(self, config_path: str) -> ConfigResult:
        name = self._inside(self._normalize_file_name(config_path))
        if not name or not self._files().joinpath(name).is_file():
            raise ConfigLoadError(f"Config not found : {config_path}")
        text = self._files().joinpath(name).read_text(encoding="utf-8")
        return ConfigResult(
            config=OmegaConf.create(text) if text.strip() else OmegaConf.create(),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        name = self._inside(self._normalize_file_name(config_path))
        return bool(name) and self._files().joinpath(name).is_file()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path.strip("/") == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if config_path.strip("/") != GROUP or results_filter == ObjectType.GROUP:
            return []
        names = [f.name[:-5] for f in self._files().iterdir() if f.name.endswith(".yaml")]
        return sorted(names)
