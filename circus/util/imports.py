"""Importing heavy modules only when they are first used.

circusd and circusctl start faster when modules that only some code paths need (psutil
for stats) are loaded on first attribute access instead of at import time.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_import(name: str) -> ModuleType:
    """*name* as a module object that loads itself on first attribute access."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def is_dotted(path: str) -> bool:
    """``pkg.mod.attr`` or ``pkg.mod:attr`` (dotted identifiers, at least two parts)."""
    module, colon, attr = path.partition(":")
    parts = module.split(".") + (attr.split(".") if colon else [])
    return bool(colon or "." in path) and len(parts) > 1 and all(p.isidentifier() for p in parts)
