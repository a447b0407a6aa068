"""Shared parts of start, stop and restart: ``[name] [--waiting] [--match MODE]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from circus.commands.base import MATCH, WAITING, Command, Flag, Props, Scope, make_message
from circus.errors import ArgumentError

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class LifecycleCommand(Command):
    flags: ClassVar[tuple[Flag, ...]] = (WAITING, MATCH)
    waitable = True

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) > 1:
            raise ArgumentError(f"usage: {self.usage}")
        props: dict[str, Any] = dict(opts)
        if args:
            props["name"] = args[0]
        return make_message(self.name, **props)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.bool_prop(props, "waiting")
        self.str_prop(props, "match")
        if "name" in props:
            self.match_watchers(arbiter, props)

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        if "name" not in props:
            return Scope.all()
        return Scope.of(w.name for w in self.match_watchers(arbiter, props))
