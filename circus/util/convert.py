"""Small, pure converters from configuration text (and JSON values) to Python values.

Each raises ``ValueError`` with a sentence that says what was expected; the caller adds
file, line and option.
"""

from __future__ import annotations

import re
import signal
import socket
from typing import Any

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def to_bool(value: object) -> bool:
    """``true yes on 1`` / ``false no off 0``, any case; a real bool passes through."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {value!r}")


def to_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def to_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def to_octal(value: object) -> int:
    """An octal mode such as ``022`` or ``0o022``; an int is taken as already converted."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if text and all(c in "01234567" for c in text):
            return int(text, 8)
    raise ValueError(f"expected an octal number such as 022, got {value!r}")


_SIGNAL_RE = re.compile(r"^(?:sig)?([a-z]+[0-9]*)(?:\s*([+-])\s*(\d+))?$", re.IGNORECASE)


def to_signum(value: object) -> int:
    """A signal number or name: ``15``, ``TERM``, ``sigterm``, ``SIGRTMIN+1``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a signal, got {value!r}")
    if isinstance(value, int):
        if 0 < value < signal.NSIG:
            return value
        raise ValueError(f"{value} is not a signal number (1..{signal.NSIG - 1})")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return to_signum(int(text))
        match = _SIGNAL_RE.match(text)
        if match:
            base = "SIG" + match.group(1).upper()
            num = getattr(signal, base, None)
            if isinstance(num, int) and base.isidentifier() and not base.startswith("SIG_"):
                if match.group(2):
                    offset = int(match.group(3))
                    num = num + offset if match.group(2) == "+" else num - offset
                if 0 < int(num) < signal.NSIG:
                    return int(num)
    raise ValueError(f"{value!r} is not a signal name or number")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def to_size(value: object) -> int:
    """A byte size: ``1024``, ``10K``, ``200M``, ``1G``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    raise ValueError(f"expected a size such as 1024, 10K or 200M, got {value!r}")


def human_bytes(n: float) -> str:
    """``8.55M`` style, as Circus prints memory sizes."""
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.2f}{unit}"
        n /= 1024
    return f"{n:.2f}T"


def cpu_time_text(seconds: float) -> str:
    """CPU time as ``M:SS.hh`` (``0:03.25``), as Circus shows ``ctime``."""
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)}:{sec:05.2f}"


def to_family(value: object) -> int:
    """A socket address family: ``AF_INET``, ``af_inet6``, ``unix`` or a number."""
    return _socket_constant(value, "AF_", ("AF_INET", "AF_INET6", "AF_UNIX"), "address family")


def to_socktype(value: object) -> int:
    """A socket type: ``SOCK_STREAM``, ``dgram``, ... or a number."""
    known = ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "SOCK_RDM", "SOCK_SEQPACKET")
    return _socket_constant(value, "SOCK_", known, "socket type")


def _socket_constant(value: object, prefix: str, known: tuple[str, ...], what: str) -> int:
    available: dict[str, int] = {
        name: getattr(socket, name) for name in known if hasattr(socket, name)
    }
    if isinstance(value, int) and not isinstance(value, bool):
        for constant in available.values():
            if constant == value:
                return constant
    elif isinstance(value, str):
        name = value.strip().upper()
        if not name.startswith(prefix):
            name = prefix + name
        if name in available:
            return available[name]
    raise ValueError(f"expected a {what} ({', '.join(available)}), got {value!r}")


def duration(seconds: Any) -> str:
    """``45s``, ``3m12s``, ``5h02m``, ``4d03h``: short enough for a column."""
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
