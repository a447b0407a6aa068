"""Watcher and process states; their values are the strings Circus puts on the wire."""

from enum import StrEnum


class WatcherState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"


class ProcessState(StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"
