"""Keeping the API token out of logs, for every component.

The protocol puts the token in the ``token`` query parameter (``ClientCore.query``), so any line that
prints a request URL prints the token: httpx logs every request at INFO (``HTTP Request: GET
http://...?token=...``), an exception may quote its URL. ``install_log_redaction`` is called once by
each component's command line (``configure_logging``), where it configures logging:

- the transports' request loggers (httpx, httpcore) are raised to WARNING, whatever the log level;
- every log record made from then on, by any logger and for any handler (files, the run log the
  worker uploads, pytest's capture), has ``token=<value>`` replaced by ``token=<redacted>`` in its
  message and in its exception's text, before any handler sees it.

Pure standard library: no I/O of its own.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["LOG_FORMAT", "REDACTED", "configure_logging", "install_log_redaction", "redact"]

#: the log line of every component
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

REDACTED = "<redacted>"

#: ``token=`` as a query or form parameter (also ``?token=``, ``&token=``, URL-encoded or quoted)
_TOKEN_PARAM = re.compile(r"(?i)(token=)(?!" + re.escape(REDACTED) + r")[^&\s'\"#,;)\]}>]+")

#: loggers that print request URLs (with the query string) at INFO or DEBUG
URL_LOGGERS = ("httpx", "httpcore", "hpack")

_MARK = "_lightly_redacting"


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` parameter replaced by ``<redacted>``."""
    if "token=" not in text.lower():  # the common case: no regex
        return text
    return _TOKEN_PARAM.sub(r"\1" + REDACTED, text)


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when a handler formats the record
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(text)  # Formatter.format uses exc_text when it is set
    return record


def install_log_redaction(level_of_url_loggers: int = logging.WARNING) -> None:
    """Redact tokens in every log record from now on and silence the transports' URL logging.

    Idempotent: a second call changes nothing."""
    for name in URL_LOGGERS:
        logging.getLogger(name).setLevel(level_of_url_loggers)
    factory = logging.getLogRecordFactory()
    if getattr(factory, _MARK, False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redact_record(factory(*args, **kwargs))

    setattr(redacting_factory, _MARK, True)
    logging.setLogRecordFactory(redacting_factory)


def configure_logging(level: str) -> None:
    """A component's logging: ``LOG_FORMAT`` on stderr at ``level`` (DEBUG, INFO, ...), tokens redacted."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    install_log_redaction()
