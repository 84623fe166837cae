"""Registry of model families. Each module in this package registers one family on import."""
from __future__ import annotations

import importlib
import pkgutil

from pipeline.config import ConfigError, family_keyed
from pipeline.errors import BilmError
from pipeline.families.base import Family, OnnxSpec

_REGISTRY: dict[str, Family] = {}


class UnknownFamilyError(BilmError, KeyError):
    """A family name or model type that no module in pipeline/families registers."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make the family available by its `name`."""
    _REGISTRY[cls.name] = cls()
    return cls


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):  # _name: shared helpers, no family
            importlib.import_module(f"{__name__}.{module.name}")


def get_family(name: str) -> Family:
    _load_all()
    if name not in _REGISTRY:
        raise UnknownFamilyError(f"unknown model family {name!r}; known families: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def family_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def check_family_keys(params) -> None:
    """Every family name in params (`families` and each map keyed by family) is registered; a misspelt name is an
    error naming the key, not a setting that silently never applies."""
    known = family_names()
    named = [("families", list(params.families))] + [(key, list(value)) for key, value in family_keyed(params)]
    for key, names in named:
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(f"{key} names unknown families {unknown}; the registered families are "
                              f"{', '.join(known)}")


def family_of_config(config) -> Family:
    """The family whose classifier matches a transformers config's model_type."""
    _load_all()
    for family in _REGISTRY.values():
        if config.model_type in family.model_types:
            return family
    raise UnknownFamilyError(f"no registered family handles model_type {config.model_type!r}; "
                   f"known families: {', '.join(sorted(_REGISTRY))}")


__all__ = ["Family", "OnnxSpec", "register", "get_family", "family_names", "family_of_config", "check_family_keys"]
