"""Hooks: user callables that run at points of a watcher's life.

A hook is given as ``"package.module.function"`` (or ``package.module:function``), plain or
``async``, and is called with keyword arguments only: ``watcher``, ``arbiter``,
``hook_name`` and the extras of that hook. A truthy return value is success; ``None`` or
another false value refuses (``before_start`` then keeps the watcher stopped). An
exception is logged and counts as success only if the hook's failures are ignored.

A ``before_spawn`` hook may also return :data:`SKIP` (or ``Skip(delay)``): no process is
started this time, the watcher keeps its state, and the missing process is asked for
again after the delay (one second by default), when the hook runs again. Any other hook
takes a ``Skip`` as a plain success.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from circus.options import HOOK_NAMES, HOOKS_IGNORED_BY_DEFAULT

log = logging.getLogger(__name__)

__all__ = ["SKIP", "Hook", "Skip", "resolve"]


@dataclass(frozen=True, slots=True)
class Skip:
    """Returned by a ``before_spawn`` hook: not this spawn; ask again in *delay* seconds."""

    delay: float = 1.0

    def __post_init__(self) -> None:
        if not self.delay >= 0:
            raise ValueError(f"Skip delay must be 0 or more seconds, got {self.delay!r}")


SKIP: Final = Skip()


def resolve(path: str) -> Callable[..., Any]:
    """Import ``pkg.mod.attr`` or ``pkg.mod:attr``. Raises ImportError naming the path."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{path!r} is not a dotted path to a callable")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ImportError(f"{path!r} is not callable")
    return obj  # type: ignore[no-any-return]


@dataclass(slots=True)
class Hook:
    name: str
    func: Callable[..., Any]
    ignore_failure: bool
    path: str = ""

    @classmethod
    def build(cls, name: str, spec: Any) -> Hook:
        """From the forms of :func:`circus.keys.hook_spec` (``"path"``, ``"path, flag"``,
        ``[path, flag]``), or a callable (optionally ``(callable, flag)``).

        Without a flag the hook's own default applies; an explicit flag wins.
        """
        if name not in HOOK_NAMES:
            raise ValueError(f"unknown hook {name!r} (known: {', '.join(HOOK_NAMES)})")
        flag: Any = None
        target = spec
        if isinstance(spec, tuple | list) and spec and callable(spec[0]):
            target, flag = spec[0], (spec[1] if len(spec) > 1 else None)
        if callable(target):
            ignore = name in HOOKS_IGNORED_BY_DEFAULT if flag is None else bool(flag)
            return cls(name, target, ignore, getattr(target, "__qualname__", repr(target)))
        from circus.keys import hook_spec

        path, ignore = hook_spec(name, spec)
        return cls(name, resolve(path), ignore, path)

    async def call(self, **kwargs: Any) -> tuple[bool | Skip, BaseException | None]:
        """Run the hook; return (success, the exception it raised or None).

        Success is a bool, or the :class:`Skip` the hook returned (which is truthy).
        """
        try:
            result = self.func(hook_name=self.name, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # a user's hook: its failure must not stop circusd
            log.exception("hook %s (%s) failed", self.name, self.path)
            return self.ignore_failure, exc
        if isinstance(result, Skip):
            return result, None
        return bool(result), None
