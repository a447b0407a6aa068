"""The tiers of control: what a client may do with circusd.

Each command class names the tier it needs (``Command.tier``, checked where the controller
dispatches it). ``reader`` sees state, ``operator`` also starts, stops and signals what is
configured, ``admin`` may change what runs and as whom (docs/deployment.md, "Securing
circusd").
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Tier(StrEnum):
    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, needed: Tier) -> bool:
        """True if a client of this tier may run a command that needs *needed*."""
        return self.rank >= needed.rank


_RANK = {Tier.READER: 0, Tier.OPERATOR: 1, Tier.ADMIN: 2}

#: Names of environment variables whose values are hidden below ``admin`` (fnmatch
#: patterns, matched upper-cased).
SECRET_NAMES = ("*PASSWORD*", "*PASSWD*", "*TOKEN*", "*_KEY", "*SECRET*", "*CREDENTIAL*",
                "*API_KEY*", "*PRIVATE*")
REDACTED = "<redacted>"


def secret_name(name: str) -> bool:
    upper = name.upper()
    return upper == "KEY" or any(fnmatch.fnmatchcase(upper, p) for p in SECRET_NAMES)


def redact_env(env: Mapping[str, Any]) -> dict[str, Any]:
    """*env* with the values of secret-looking names replaced by ``<redacted>``."""
    return {k: (REDACTED if secret_name(str(k)) else v) for k, v in env.items()}


def redact(value: Any) -> Any:
    """A copy of a reply (or of a command's properties) in which every ``env`` mapping has
    its secret-looking values hidden."""
    if isinstance(value, dict):
        return {k: (redact_env(v) if k == "env" and isinstance(v, dict) else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
