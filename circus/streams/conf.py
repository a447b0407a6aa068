"""A stream's configuration as a watcher holds it: the class and each key, typed once.

The same parsers serve an INI file (``stdout_stream.max_bytes = 10M``), ``circusctl set``
and JSON, so a key means the same whichever way it arrives (see :mod:`circus.keys`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from circus.util.convert import to_bool, to_int, to_size
from circus.util.imports import is_dotted

# Stream classes known by a bare name (any case); anything with a dot is a dotted path.
STREAM_CLASSES = (
    "FileStream",
    "WatchedFileStream",
    "TimedRotatingFileStream",
    "StdoutStream",
    "StderrStream",
    "FancyStdoutStream",
    "QueueStream",
    "SyslogStream",
)

# Stream keys with a type: the same parser whichever door the value comes through.
_STREAM_TYPED = {
    "max_bytes": to_size,
    "backup_count": to_int,
    "rotate_interval": to_int,
    "interval": to_int,
    "utc": to_bool,
    "prefix": to_bool,
}


def stream_class(name: str) -> str:
    """A stream class as configured: a built-in name in any case, or a dotted path."""
    name = name.strip()
    if "." in name or ":" in name:
        if not is_dotted(name):
            raise ValueError(f"expected a dotted class path, got {name!r}")
        return name
    canonical = {c.lower(): c for c in STREAM_CLASSES}.get(name.lower())
    if canonical is None:
        raise ValueError(f"unknown stream class {name!r} (known: {', '.join(STREAM_CLASSES)}, "
                         "or a dotted path)")
    return canonical


def stream_conf(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A whole stream configuration, each key typed; a ``filename`` alone is a FileStream."""
    if "class" not in conf and "filename" not in conf:
        raise ValueError("needs a 'class' or a 'filename'")
    result = {str(k): stream_value(str(k), v) for k, v in conf.items()}
    result.setdefault("class", "FileStream")
    return result


def stream_value(sub: str, value: Any) -> Any:
    """One key of a stream configuration, typed the same from text and from JSON."""
    if sub == "class":
        if not isinstance(value, str):
            raise ValueError(f"expected a class name, got {value!r}")
        return stream_class(value)
    parse = _STREAM_TYPED.get(sub)
    if parse is not None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return parse(value)
    if sub == "stream" and callable(value):  # the library's {"stream": callable}
        return value
    if not isinstance(value, str | int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"expected a string or a number, got {value!r}")
    return value
