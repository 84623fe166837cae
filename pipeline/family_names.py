"""The model families' names without importing them (a leaf: no torch, no transformers). Each family's module in
pipeline/families is named after the family it registers (`pipeline.families.register` checks), so a family name
or a misspelt family key is an error within a second, before a command imports the training stack (about 10 s)."""
from __future__ import annotations

import importlib.util
import pkgutil

from pipeline.config import ConfigError, family_keyed
from pipeline.errors import BilmError

NOT_FAMILIES = ("base",)  # pipeline/families modules that define no family; _name modules are helpers


class UnknownFamilyError(BilmError, KeyError):
    """A family name or model type that no module in pipeline/families registers."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def family_module_names() -> list[str]:
    """The modules of pipeline/families that each register one family, by name, sorted; none is imported."""
    locations = importlib.util.find_spec("pipeline.families").submodule_search_locations
    return sorted(m.name for m in pkgutil.iter_modules(locations)
                  if m.name not in NOT_FAMILIES and not m.name.startswith("_"))


def check_family_name(name: str) -> None:
    known = family_module_names()
    if name not in known:
        raise UnknownFamilyError(f"unknown model family {name!r}; known families: {', '.join(known)}")


def check_family_keys(params) -> None:
    """Every family name in params (`families` and each map keyed by family) is a family; a misspelt name is an
    error naming the key, not a setting that silently never applies."""
    known = family_module_names()
    named = [("families", list(params.families))] + [(key, list(value)) for key, value in family_keyed(params)]
    for key, names in named:
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(f"{key} names unknown families {unknown}; the registered families are "
                              f"{', '.join(known)}")
