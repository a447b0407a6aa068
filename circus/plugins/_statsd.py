"""The seed's name for the statsd plugins (``use = circus.plugins._statsd.StatsdEmitter``)."""

from circus.plugins.statsd import FullStats, StatsdEmitter

__all__ = ["FullStats", "StatsdEmitter"]
