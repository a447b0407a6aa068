"""What a peer may run, and the audit trail of what it ran.

The controller asks :func:`refusal` before it validates a request: the command's tier
(``Command.tier``) against the peer's (circus/tiers.py), then the ``endpoint_owner`` rule.
Every command that changes something (a tier above ``reader``) leaves one line on the
``circus.audit`` logger, starting with ``audit:``, once its result is known.

``endpoint_owner``: the user who owns the ``ipc://`` endpoint files may drive circusd, but
not make it run something as another user. Circus 0.19 only checked ``add``; here every
command that changes what runs or as whom is checked: ``add`` (the new watcher's ``uid``
must be the owner), ``set`` of a key in :data:`RUNS_AS` (the watcher must run as the owner,
before and after), and ``reloadconfig`` (which runs whatever the file says) is refused.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from circus.tiers import Tier, redact
from circus.util.accounts import user_id

if TYPE_CHECKING:
    from circus.commands.base import Command, Props
    from circus.peers import Peer
    from circus.types import ArbiterAPI

audit_log = logging.getLogger("circus.audit")

#: ``set`` keys that change what a watcher runs or as whom.
RUNS_AS = frozenset({
    "cmd", "args", "uid", "gid", "env", "shell", "shell_args", "working_dir", "hooks",
    "stdout_stream", "stderr_stream", "virtualenv", "copy_env", "copy_path", "executable",
    "use_sockets", "umask",
})


def tier_of(peer: Peer | None) -> Tier:
    """A request without a peer comes from an endpoint that serves everyone (inproc://, or
    a remote one allowed with allow_unauthenticated_remote): admin, as in Circus 0.19."""
    return Tier.ADMIN if peer is None or peer.tier is None else peer.tier


def refusal(cmd: Command, props: Props, peer: Peer | None, arbiter: ArbiterAPI) -> str | None:
    """Why *peer* may not run *cmd* with *props*, or None."""
    have = tier_of(peer)
    if not have.covers(cmd.tier):
        return (f"{cmd.name!r} needs the {cmd.tier} tier; {_who(peer)} is {have} "
                "(see 'Securing circusd' in docs/deployment.md)")
    if peer is not None and peer.why == "endpoint_owner":
        return _owner_refusal(cmd, props, arbiter)
    return None


def _owner_refusal(cmd: Command, props: Props, arbiter: ArbiterAPI) -> str | None:
    owner = getattr(arbiter, "endpoint_owner", None)
    if owner is None:
        return None
    try:
        owner_uid = user_id(owner)
    except ValueError:
        return "endpoint_owner names no user"
    if cmd.name == "reloadconfig":
        return ("endpoint_owner may not run 'reloadconfig': the file may run programs as "
                "any user; ask root or circusd's own user")
    if cmd.name == "add":
        options = props.get("options")
        uid = options.get("uid") if isinstance(options, dict) else None
        if _uid(uid) != owner_uid:
            return f"endpoint_owner may only add watchers that run as {owner!r} (options.uid)"
    if cmd.name == "set":
        options = props.get("options")
        keys = set(options) if isinstance(options, dict) else set()
        # a family's member (hooks.after_start, stdout_stream.filename, env.X) counts too
        touched = sorted(k for k in keys if str(k).split(".")[0] in RUNS_AS)
        if not touched:
            return None
        name = props.get("name")
        current: Any = None
        try:
            current = arbiter.get_watcher(str(name)).get_option("uid")
        except Exception:  # an unknown watcher: validation answers that
            return None
        if current is None:
            current = _own_uid()
        new = options.get("uid", current) if isinstance(options, dict) else current
        if _uid(current) != owner_uid or _uid(new) != owner_uid:
            return (f"endpoint_owner may not set {', '.join(touched)} of a watcher that does "
                    f"not run as {owner!r} (its uid, before and after, must be the owner's)")
    return None


def _own_uid() -> int:
    import os

    return os.geteuid()


def _uid(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    try:
        return user_id(str(value))
    except ValueError:
        return None


def _who(peer: Peer | None) -> str:
    return "this client" if peer is None else peer.describe()


def who(peer: Peer | None, endpoint: str) -> str:
    """The audit's name of a peer: ``key:NAME``, ``ipc:uid 0 (root)``, ``tcp:…``."""
    transport = endpoint.split("://", 1)[0]
    if peer is None:
        return f"{transport}:anyone"
    if peer.key is not None:
        return f"key:{peer.key}"
    return f"{transport}:{peer.describe()}"


def audit(cmd: Command, props: Props, peer: Peer | None, endpoint: str, result: str) -> None:
    """One ``audit:`` line for a command above ``reader`` (secrets removed)."""
    if cmd.tier == Tier.READER:
        return
    try:
        args = json.dumps(redact(props), sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        args = "(unprintable)"
    if len(args) > 2000:
        args = args[:1997] + "..."
    audit_log.info("audit: who=%s command=%s args=%s result=%s",
                   who(peer, endpoint), cmd.name, args, result)


def result_of(reply: dict[str, Any] | None) -> str:
    if reply is None:
        return "ok"
    if reply.get("status") == "error":
        return "error: " + str(reply.get("reason", ""))[:200]
    return "ok"
