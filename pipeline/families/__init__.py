"""Registry of model families. Each module in this package registers one family on import."""
from __future__ import annotations

import importlib
import pkgutil

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


def family_of_config(config) -> Family:
    """The family whose classifier matches a transformers config's model_type."""
    _load_all()
    for family in _REGISTRY.values():
        if config.model_type in family.model_types:
            return family
    raise UnknownFamilyError(f"no registered family handles model_type {config.model_type!r}; "
                   f"known families: {', '.join(sorted(_REGISTRY))}")


__all__ = ["Family", "OnnxSpec", "register", "get_family", "family_names", "family_of_config"]
