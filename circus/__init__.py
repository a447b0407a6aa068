"""Circus: a process watcher and runner driven over ZeroMQ.

The public API is re-exported here; the modules are imported only when used, so that
``circusctl`` stays quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.20.0"

__all__ = ["__version__", "get_arbiter"]

if TYPE_CHECKING:
    from circus.arbiter import Arbiter


def get_arbiter(*args: Any, **kwargs: Any) -> Arbiter:
    """Build an :class:`~circus.arbiter.Arbiter`; see :func:`circus.arbiter.get_arbiter`."""
    from circus.arbiter import get_arbiter as _get_arbiter

    return _get_arbiter(*args, **kwargs)
