"""Users and groups given by name or number, as the config, commands and spawns take them."""

from __future__ import annotations

import grp
import pwd


def user_id(user: int | str) -> int:
    """The uid of *user* (a number, a numeric string or a name). ValueError if unknown."""
    if isinstance(user, int) or user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"no user named {user!r}") from None


def group_id(group: int | str) -> int:
    """The gid of *group* (a number, a numeric string or a name). ValueError if unknown."""
    if isinstance(group, int) or group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no group named {group!r}") from None
