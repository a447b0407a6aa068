"""Circus: a process watcher and runner driven over ZeroMQ.

The public API is re-exported here; the modules are imported only when used, so that
``circusctl`` stays quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.20.0"

__all__ = ["__version__", "get_arbiter"]

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import zmq.asyncio

    from circus.arbiter import Arbiter


def get_arbiter(
    watchers: Sequence[Mapping[str, Any]] | str,
    numprocesses_or_none: int | None = None,
    controller: str = "tcp://127.0.0.1:5555",
    pubsub_endpoint: str = "tcp://127.0.0.1:5556",
    stats_endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    context: zmq.asyncio.Context | None = None,
    background: bool = False,
    stream_backend: str = "thread",
    plugins: Sequence[Mapping[str, Any]] | None = None,
    check_delay: float = 1.0,
    numprocesses: int | None = None,
    **options: Any,
) -> Arbiter:
    """Build an :class:`~circus.arbiter.Arbiter` from watcher mappings, as the seed
    documents it (and as Circus has it, here in the package itself).

    ``get_arbiter([{"name": "web", "cmd": "python web.py", "numprocesses": 4}])`` or the
    shorthand ``get_arbiter("myprogram", 4)`` / ``get_arbiter("myprogram", numprocesses=3)``
    for one watcher. With ``background=True``, :meth:`Arbiter.start` runs it in a thread
    and returns once the watchers run; from then on plain calls such as
    ``arbiter.add_watcher(...)`` or ``watcher.stop()`` run on that thread's loop and
    return when done (see circus/syncapi.py).
    """
    import os
    import shlex

    from circus.arbiter import Arbiter, watcher_from_config

    if isinstance(watchers, str):
        count = numprocesses if numprocesses is not None else (numprocesses_or_none or 1)
        cmd = watchers
        watchers = [{"name": name or os.path.basename(shlex.split(cmd)[0]), "cmd": cmd,
                     "numprocesses": count, "env": dict(env) if env else None}]
    built = []
    for spec in watchers:
        conf = dict(spec)
        if conf.get("env") is None:
            conf.pop("env", None)
            if env:
                conf["env"] = dict(env)
        conf.setdefault("name", os.path.basename(shlex.split(conf.get("cmd", "x"))[0]))
        conf.setdefault("stream_backend", stream_backend)
        built.append(watcher_from_config(conf))
    arbiter = Arbiter(
        built,
        controller,
        pubsub_endpoint,
        check_delay=check_delay,
        context=context,
        stats_endpoint=stats_endpoint,
        plugins=plugins,
        **options,
    )
    arbiter.run_in_thread = background
    return arbiter

