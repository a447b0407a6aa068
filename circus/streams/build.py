"""``build_stream``: from a watcher's ``stdout_stream.*`` / ``stderr_stream.*`` keys to a stream."""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from circus.streams.base import Stream, StreamConfigError
from circus.streams.console import FancyStdoutStream, StderrStream, StdoutStream
from circus.streams.files import FileStream, TimedRotatingFileStream, WatchedFileStream
from circus.streams.memory import QueueStream
from circus.streams.syslog import SyslogStream

__all__ = ["BUILTIN_STREAMS", "build_stream"]

log = logging.getLogger(__name__)

BUILTIN_STREAMS: dict[str, Callable[..., Any]] = {
    cls.__name__: cls
    for cls in (
        FileStream,
        WatchedFileStream,
        TimedRotatingFileStream,
        StdoutStream,
        StderrStream,
        FancyStdoutStream,
        QueueStream,
        SyslogStream,
    )
}

# Keys a stream may not know: ``tag`` is the watcher name callers pass to every stream (the
# syslog and console streams use it); ``refresh_time`` is a Circus 0.4 option, accepted and ignored.
_CONTEXT_KEYS = frozenset({"tag", "refresh_time"})

# Module paths Circus configs may spell the built-in classes with.
_LEGACY_MODULES = ("circus.stream.", "circus.streams.")


class _CallableStream:
    """A plain callable given as ``{"stream": fn}``, with the ``close()`` streams must have."""

    def __init__(self, func: Callable[[dict[str, Any]], object]) -> None:
        self.wrapped = func

    def __call__(self, data: dict[str, Any]) -> None:
        self.wrapped(data)

    def close(self) -> None:
        """Nothing to close: the callable belongs to whoever made it."""

    def __repr__(self) -> str:
        return f"<stream {self.wrapped!r}>"


def _as_stream(obj: object) -> Stream:
    if callable(getattr(obj, "close", None)):
        return cast(Stream, obj)
    return _CallableStream(cast(Callable[[dict[str, Any]], object], obj))


def _import(path: str) -> object:
    """The object at ``pkg.mod.Name`` or ``pkg.mod:Name`` (``Name`` may be ``Outer.Inner``)."""
    if ":" in path:
        module_name, _, attrs = path.partition(":")
        splits = [(module_name, attrs)]
    else:
        parts = path.split(".")
        splits = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    for module_name, attrs in splits:
        if not module_name or not attrs:
            break
        try:
            obj: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing == module_name or module_name.startswith(missing + "."):
                continue  # no such module: maybe the name is an attribute of a shorter one
            raise StreamConfigError("class", f"cannot import {module_name!r}: {exc}") from None
        except Exception as exc:  # the module's own code failed
            raise StreamConfigError("class", f"cannot import {module_name!r}: {exc!r}") from None
        for attr in attrs.split("."):
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise StreamConfigError(
                    "class", f"module {module_name!r} has no {attrs!r}"
                ) from None
        return obj
    raise StreamConfigError("class", f"cannot import {path!r}: no such module")


def _resolve(spec: object) -> tuple[Callable[..., Any], str, bool]:
    """``(factory, name for messages, built in?)`` for the value of the ``class`` key."""
    if not isinstance(spec, str):
        if callable(spec):
            name = getattr(spec, "__qualname__", repr(spec))
            return spec, name, any(spec is cls for cls in BUILTIN_STREAMS.values())
        raise StreamConfigError("class", f"expected a class name or dotted path, got {spec!r}")
    text = spec.strip()
    for prefix in _LEGACY_MODULES:
        if text.startswith(prefix) and text[len(prefix) :] in BUILTIN_STREAMS:
            text = text[len(prefix) :]
    if text in BUILTIN_STREAMS:
        return BUILTIN_STREAMS[text], text, True
    for name, cls in BUILTIN_STREAMS.items():
        if name.lower() == text.lower():
            return cls, name, True
    if "." not in text and ":" not in text:
        known = ", ".join(BUILTIN_STREAMS)
        raise StreamConfigError(
            "class",
            f"unknown stream class {text!r} (built-in: {known}; or a dotted path pkg.mod.Class)",
        )
    factory = _import(text)
    if not callable(factory):
        raise StreamConfigError("class", f"{text!r} is not a class or callable")
    return factory, text, False


def _keyword_args(
    factory: Callable[..., Any], name: str, builtin: bool, options: dict[str, Any]
) -> dict[str, Any]:
    """Keep the options *factory* takes; check that none it requires is missing."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # not introspectable: hand everything over
        return {k: v for k, v in options.items() if k != "refresh_time"}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {
        p.name: p
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and not p.name.startswith("_")
    }
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key in named or (takes_any and key != "refresh_time"):
            kwargs[key] = value
        elif key in _CONTEXT_KEYS:
            continue
        elif builtin:  # Circus ignored these; say so rather than fail an old config
            log.warning("stream option %r is not used by %s, ignoring it", key, name)
        else:
            raise StreamConfigError(key, f"not an option of {name}")
    for param in named.values():
        if param.default is param.empty and param.name not in kwargs:
            raise StreamConfigError(param.name, f"required by {name}")
    return kwargs


def build_stream(conf: Mapping[str, Any]) -> Stream:
    """Build the stream a watcher's ``stdout_stream.*`` (or ``stderr_stream.*``) keys describe.

    Args:
        conf: The keys without their prefix. ``class`` is a built-in name (``FileStream``,
            ``WatchedFileStream``, ``TimedRotatingFileStream``, ``StdoutStream``,
            ``StderrStream``, ``FancyStdoutStream``, ``QueueStream``, ``SyslogStream``) or a
            dotted path (``pkg.mod.Class`` or ``pkg.mod:Class``) to any class whose instances
            are callable; without ``class``, a ``filename`` gives a FileStream. The other keys
            go to the class as keyword arguments; values may be INI strings or typed
            JSON/Python values. ``{"stream": callable}`` hands over a callable that is already
            built.

            Callers should pass ``tag=<watcher name>``: SyslogStream files lines under it, the
            console streams show it with ``prefix``, and any class that does not take ``tag``
            never sees it (nor ``refresh_time``, a Circus 0.4 key). An option a built-in
            class does not know is logged and ignored, as Circus did; a custom class must
            accept every key it is given.

    Returns:
        A stream: callable with ``{"data": bytes, "pid": int, "name": str, "wid": int |
        None}``, and ``close()``.

    Raises:
        StreamConfigError: (a ``ValueError``) naming the faulty key in ``.key`` and in its
            message: unknown class, failed import, bad or missing option, unopenable file.
    """
    options = dict(conf)
    if "stream" in options:
        given = options.pop("stream")
        if not callable(given):
            raise StreamConfigError("stream", f"expected a callable, got {given!r}")
        return _as_stream(given)
    spec = options.pop("class", None)
    if spec is None or spec == "":
        if not options.get("filename"):
            raise StreamConfigError("class", "missing: give a class, or a filename for a file")
        spec = "FileStream"
    factory, name, builtin = _resolve(spec)
    kwargs = _keyword_args(factory, name, builtin, options)
    try:
        stream = factory(**kwargs)
    except StreamConfigError:
        raise
    except Exception as exc:
        raise StreamConfigError("class", f"{name}() failed: {exc}") from None
    if not callable(stream):
        raise StreamConfigError("class", f"{name}() returned {stream!r}, which is not callable")
    return _as_stream(stream)
