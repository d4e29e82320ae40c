"""Python's ``logging`` into comb's log interface: each record is a log
line in comb's log and an event on the current span, at its level."""

import logging

from wit_world.imports import log as wit_log
from wit_world.imports import tracing as wit

_LEVELS = (
    (logging.ERROR, wit_log.Level.ERROR),
    (logging.WARNING, wit_log.Level.WARN),
    (logging.INFO, wit_log.Level.INFO),
    (logging.DEBUG, wit_log.Level.DEBUG),
)


class CombHandler(logging.Handler):
    """Sends records to comb."""

    def emit(self, record: logging.LogRecord) -> None:
        level = next((to for at, to in _LEVELS if record.levelno >= at), wit_log.Level.TRACE)
        fields = [wit.KeyValue("logger", wit.Value_String(record.name))]
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            fields.append(wit.KeyValue("exception.type", wit.Value_String(type(error).__name__)))
            fields.append(wit.KeyValue("exception.message", wit.Value_String(str(error))))
        wit_log.log(level, record.getMessage(), fields)


def install() -> None:
    """Sends the root logger's records (INFO and up) to comb."""
    root = logging.getLogger()
    root.addHandler(CombHandler())
    root.setLevel(logging.INFO)
