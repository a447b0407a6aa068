"""How circusd runs a plugin: the class is checked at start-up, then each plugin becomes a
singleton watcher named ``plugin:NAME`` whose one process is the ``circus-plugin`` runner.

The runner's command line is built so that no value can break it (Circus 0.19 joined
``key:value`` pairs unquoted, so a value with a space broke the argv): the arguments are a
list (never split again), and the plugin's options travel as one JSON argument in which
``$`` and ``(`` are written as JSON escapes, so no ``$(circus.x)``, ``((circus.x))`` or
``$WID`` substitution can touch them.

Decisions, also in docs/plugins.md:

* ``active = false``: the plugin watcher is listed but created with ``autostart = false``
  and ``respawn = false``; started by hand, the runner exits 0 at once and stays stopped.
* The plugin's keys go to the plugin, not to its watcher (0.19 gave them to both, so the
  flapping plugin's ``max_retry = 0`` kept the plugin itself from starting). Only
  ``priority`` (default 1) and the process settings ``uid``, ``gid`` and ``working_dir``
  also apply to the watcher.
* The plugin process inherits circusd's environment and its ``sys.path``; its output is
  captured like any watcher's (forwarded to circusd's stdout, kept for ``tail``), and it
  logs at ``info`` (``debug`` when circusd runs with ``debug = true``).
"""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from circus.errors import ConfigError, OptionError
from circus.options import WATCHER_OPTIONS
from circus.util.convert import to_bool

RUNNER_MODULE = "circus.cli.plugin"
#: Constructor arguments the runner passes itself: a section cannot set them.
RESERVED = frozenset({"endpoint", "pubsub_endpoint", "check_delay", "ssh_server", "context",
                      "keys"})
#: Keys of a plugin section that are not given to the plugin.
NOT_PASSED = frozenset({"use", "priority"})
#: Keys of a plugin section that also apply to the plugin's process.
PROCESS_KEYS = ("uid", "gid", "working_dir")
PLUGIN_PREFIX = "plugin:"
GRACEFUL_TIMEOUT = 5.0


def load_class(use: str) -> type:
    """The class at the dotted path *use* (``pkg.module.Class`` or ``pkg.module:Class``).

    Raises:
        ImportError: the module or the attribute cannot be found.
    """
    if ":" in use:
        module_name, _, attr_path = use.partition(":")
        parts = attr_path.split(".")
    else:
        module_name, _, last = use.rpartition(".")
        parts = [last]
        if not module_name:
            raise ImportError(f"{use!r} is not a dotted path such as package.module.Class")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in parts:
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {part!r}") from None
    if not isinstance(target, type):
        raise ImportError(f"{use!r} is not a class")
    return target


def plugin_config(plugin: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a plugin mapping that the plugin's constructor receives."""
    return {k: v for k, v in plugin.items() if k not in NOT_PASSED and not k.startswith("_")}


def is_active(plugin: Mapping[str, Any]) -> bool:
    try:
        return to_bool(plugin.get("active", True))
    except ValueError:
        return True  # check_plugin reports it


def check_plugin(plugin: Mapping[str, Any]) -> type:
    """Check a plugin mapping and return its class.

    Raises:
        OptionError: no ``use``, a class that cannot be imported, a reserved key, or an
            option the plugin declares with a value it cannot use.
    """
    use = plugin.get("use")
    if not isinstance(use, str) or not use:
        raise OptionError("use", "missing: the dotted path of the plugin class")
    try:
        cls = load_class(use)
    except Exception as exc:  # importing user code can fail in any way
        raise OptionError("use", f"cannot import {use!r}: {exc}") from exc
    config = plugin_config(plugin)
    reserved = sorted(RESERVED & set(config))
    if reserved:
        raise OptionError(reserved[0], "reserved: circusd passes this to the plugin itself")
    check = getattr(cls, "check_config", None)
    if callable(check):
        check(config)  # OptionError for the plugin's own options
    elif "active" in config:
        try:
            to_bool(config["active"])
        except ValueError as exc:
            raise OptionError("active", str(exc)) from None
    return cls


def plugin_name(plugin: Mapping[str, Any]) -> str:
    """``plugin:NAME`` (the ``use`` path when the mapping has no name)."""
    return PLUGIN_PREFIX + str(plugin.get("name") or plugin["use"])


def is_plugin_watcher(name: str) -> bool:
    return name.startswith(PLUGIN_PREFIX)


def inert_json(value: Any) -> str:
    """JSON of *value* with ``$`` and ``(`` escaped, so no substitution applies to it."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text.replace("$", "\\u0024").replace("(", "\\u0028")


def runner_args(
    plugin: Mapping[str, Any],
    endpoint: str,
    pubsub_endpoint: str,
    check_delay: float,
    debug: bool = False,
) -> list[str]:
    """The arguments of ``python -m circus.cli.plugin`` for *plugin*."""
    return [
        "-m",
        RUNNER_MODULE,
        "--endpoint",
        endpoint,
        "--pubsub",
        pubsub_endpoint,
        "--check-delay",
        repr(float(check_delay)),
        "--config",
        inert_json(plugin_config(plugin)),
        "--log-level",
        "debug" if debug else "info",
        "--exit-with-parent",
        str(plugin["use"]),
    ]


def plugin_watcher_confs(plugins: Sequence[Mapping[str, Any]], endpoint: str,
                         pubsub_endpoint: str, check_delay: float, debug: bool = False
                         ) -> list[dict[str, Any]]:
    """The singleton watchers that run *plugins*; ConfigError naming the section."""
    confs = []
    for plugin in plugins:
        try:
            confs.append(plugin_watcher_conf(plugin, endpoint, pubsub_endpoint, check_delay,
                                             debug))
        except OptionError as exc:
            section = f"plugin:{plugin.get('name') or plugin.get('use')}"
            raise ConfigError(exc.reason, section=section,
                              option=exc.option) from exc
    return confs


def plugin_watcher_conf(
    plugin: Mapping[str, Any],
    endpoint: str,
    pubsub_endpoint: str,
    check_delay: float,
    debug: bool = False,
) -> dict[str, Any]:
    """The watcher mapping (as :func:`circus.arbiter.watcher_from_config` takes it) that
    runs *plugin*.

    Raises:
        OptionError: see :func:`check_plugin`.
    """
    check_plugin(plugin)
    conf: dict[str, Any] = {
        "name": plugin_name(plugin),
        "cmd": shlex.quote(sys.executable),
        "args": runner_args(plugin, endpoint, pubsub_endpoint, check_delay, debug),
        "singleton": True,
        "numprocesses": 1,
        "priority": int(plugin.get("priority", 1)),
        "copy_env": True,
        "copy_path": True,
        "graceful_timeout": GRACEFUL_TIMEOUT,
    }
    for key in PROCESS_KEYS:
        if plugin.get(key) not in (None, ""):
            try:
                conf[key] = WATCHER_OPTIONS[key].text(plugin[key])
            except ValueError as exc:
                raise OptionError(key, str(exc)) from None
    if not is_active(plugin):
        conf["autostart"] = False
        conf["respawn"] = False
    return conf


def own_watcher_confs(arbiter: Any, plugins: Sequence[Mapping[str, Any]]
                      ) -> list[dict[str, Any]]:
    """The singleton watchers *arbiter* runs for itself: *plugins*, and circusd-stats and
    circushttpd when wanted (circus/stats/launch.py, circus/web/launch.py), each given
    circusd's own key when CURVE is on.

    Raises:
        ConfigError: a plugin section that cannot be run.
    """
    from circus.curve import give_internal_key
    from circus.stats.launch import stats_watcher_confs
    from circus.web.launch import httpd_watcher_confs

    ends = (arbiter.endpoint, arbiter.pubsub_endpoint)
    return give_internal_key(
        plugin_watcher_confs(plugins, *ends, arbiter.check_delay, arbiter.debug)
        + stats_watcher_confs(arbiter.statsd, *ends, arbiter.stats_endpoint, arbiter.debug,
                              arbiter.options.get("prometheus_host"),
                              arbiter.options.get("prometheus_port"))
        + httpd_watcher_confs(arbiter.endpoint, arbiter.options, arbiter.config_file,
                              arbiter.debug),
        arbiter.curve, arbiter.options)
