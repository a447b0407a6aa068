"""circusd's own log: where it goes (stdout, stderr, a file, syslog) and its format.

Only ``circusd`` calls :func:`configure`; importing circus never touches logging.
"""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import sys
from urllib.parse import urlparse

LOG_FORMAT = "%(asctime)s {program}[%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LEVELS = ("critical", "error", "warning", "info", "debug")


def _handler(output: str) -> logging.Handler:
    if output in ("-", "stdout"):
        return logging.StreamHandler(sys.stdout)
    if output == "stderr":
        return logging.StreamHandler(sys.stderr)
    if output.startswith("syslog://"):
        url = urlparse(output)
        facility_name = url.query or "user"
        facility = logging.handlers.SysLogHandler.facility_names.get(facility_name)
        if facility is None:
            raise ValueError(f"unknown syslog facility {facility_name!r}")
        address: str | tuple[str, int]
        address = (url.hostname, url.port or 514) if url.hostname else url.path or "/dev/log"
        handler = logging.handlers.SysLogHandler(address=address, facility=facility)
        handler.setFormatter(logging.Formatter("circusd[%(process)d]: [%(levelname)s] %(message)s"))
        return handler
    # a file; reopened when logrotate moves it away
    return logging.handlers.WatchedFileHandler(output)


def configure(level: str = "info", output: str = "-", config_file: str | None = None,
              program: str = "circus") -> None:
    """Set up the root logger for circusd (or another of circus's programs: *program*
    names it in each line).

    Raises:
        ValueError: an unknown level, facility or logger-config file type.
        OSError: the log file cannot be opened.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    if config_file and config_file != "default":
        _load_logger_config(config_file)
        return
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = _handler(output)
    if not isinstance(handler, logging.handlers.SysLogHandler):
        handler.setFormatter(logging.Formatter(LOG_FORMAT.format(program=program), DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())


def _load_logger_config(path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".ini", ".cfg", ".conf"):
        logging.config.fileConfig(path, disable_existing_loggers=False)
    elif ext == ".json":
        with open(path) as fh:
            _dict_config(json.load(fh))
    elif ext in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install circus[yaml])"
                             ) from None
        with open(path) as fh:
            _dict_config(yaml.safe_load(fh))
    else:
        raise ValueError(f"{path}: a logger config must be .ini, .json or .yaml")


def _dict_config(conf: dict[str, object]) -> None:
    # circus's loggers exist before the file is read; keep them unless told otherwise
    conf.setdefault("disable_existing_loggers", False)
    logging.config.dictConfig(conf)


class StartupBuffer(logging.Handler):
    """Holds log records emitted before circusd's log is configured."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        root = logging.getLogger()
        self._previous_level = root.level
        root.addHandler(self)
        root.setLevel(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def _detach(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self)

    def replay(self) -> None:
        """Send the held records through the handlers configured since."""
        self._detach()
        for record in self.records:
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        self.records.clear()

    def flush_to_stderr(self) -> None:
        self._detach()
        logging.getLogger().setLevel(self._previous_level)
        formatter = logging.Formatter("circusd: %(levelname)s: %(message)s")
        for record in self.records:
            if record.levelno >= logging.WARNING:
                print(formatter.format(record), file=sys.stderr)
        self.records.clear()
