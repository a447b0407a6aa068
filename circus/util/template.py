"""Substitutions in configuration values and command lines.

Three kinds of placeholder exist:

``$(circus.KEY)`` / ``((circus.KEY))``
    Looked up in a mapping whose keys are lowercase (``wid``, ``env.path``,
    ``sockets.web``). The placeholder itself is matched without regard to case, so
    ``$(CIRCUS.ENV.Path)`` reads ``env.path``. An unknown key is left as written.
``$WID``
    The worker id, in ``cmd`` and ``args`` (as the seed documentation promises).
``$NAME``
    An environment variable of circusd, used once over the values of a watcher's
    computed environment. Only upper-case names are recognised; an unset variable
    becomes the empty string.

These run at every spawn, so each has a fast path for text without a ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["env_values", "expand", "expand_env_vars", "expand_wid"]

_PLACEHOLDER = re.compile(
    r"\$\(circus\.([A-Za-z0-9_.\-]+)\)|\(\(circus\.([A-Za-z0-9_.\-]+)\)\)",
    re.IGNORECASE,
)
_WID = re.compile(r"\$WID(?![A-Za-z0-9_])")
_ENV_VAR = re.compile(r"\$([A-Z][A-Z0-9_]*+)(?![a-z])")


def expand(text: str, values: Mapping[str, object]) -> str:
    """Replace ``$(circus.KEY)`` and ``((circus.KEY))`` with ``str(values[key.lower()])``.

    Placeholders whose key is not in *values* are kept verbatim.
    """
    if "$(" not in text and "((" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        key = (match.group(1) or match.group(2)).lower()
        if key in values:
            return str(values[key])
        return match.group(0)

    return _PLACEHOLDER.sub(replace, text)


def expand_wid(text: str, wid: int) -> str:
    """Replace each ``$WID`` (not ``$WIDTH``) with *wid*."""
    if "$WID" not in text:
        return text
    return _WID.sub(str(wid), text)


def expand_env_vars(value: str, environ: Mapping[str, str]) -> str:
    """Replace ``$NAME`` (``NAME`` = ``[A-Z][A-Z0-9_]*``) with ``environ.get(NAME, "")``.

    ``${NAME}``, ``$lower`` and ``$Mixed`` are left alone.
    """
    if "$" not in value:
        return value
    return _ENV_VAR.sub(lambda m: environ.get(m.group(1), ""), value)


def env_values(environ: Mapping[str, str], prefix: str = "env.") -> dict[str, str]:
    """``{"env.<name lowercased>": value}`` for use with :func:`expand`."""
    return {prefix + key.lower(): value for key, value in environ.items()}
