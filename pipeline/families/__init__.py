"""Registry of model families. Each module in this package registers one family on import."""
from __future__ import annotations

import importlib

from pipeline.families.base import Family, OnnxSpec
from pipeline.family_names import UnknownFamilyError, check_family_keys, check_family_name, family_module_names

_REGISTRY: dict[str, Family] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make the family available by its `name`, which must be its module's name (so that
    pipeline.family_names lists the families without importing them)."""
    module = cls.__module__.rsplit(".", 1)[-1]
    if module != cls.name:
        raise TypeError(f"family {cls.name!r} is defined in module {module!r}: name the module {cls.name}.py")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_all() -> None:
    for name in family_module_names():
        importlib.import_module(f"{__name__}.{name}")


def get_family(name: str) -> Family:
    check_family_name(name)  # the module names are the registry's names (register checks)
    _load_all()
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


__all__ = ["Family", "OnnxSpec", "register", "get_family", "family_names", "family_of_config", "check_family_keys"]
