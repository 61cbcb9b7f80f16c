"""Credentials out of everything streamrec shows: events, pages, terminal and log lines.

Source URLs may carry secrets (`rtsp://admin:pass@cam/...`, `https://cdn/x.m3u8?token=...`) and
FFmpeg's error texts repeat them, so redaction works on any text, not on the URL a user gave:
`redact` is applied where text leaves the process (the event builders, the log handler's filter,
the CLI's error line, the terminal view) rather than at each place a URL is formatted.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://USERINFO@ (RFC 3986: the authority ends at / ? #; its last "@" ends the user info, since a
# raw password may hold "@"); quotes and spaces end a URL inside an error text.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>/?#@]*(?:@[^\s'\"<>/?#@]*)*@")
# Query parameters that carry credentials in signed or private stream URLs.
_SECRET_PARAMETER = re.compile(
    r"(?P<name>[?&;](?:access_token|api_?key|apikey|auth|key|pass|passwd|password|pwd|secret|sig|signature|token)=)"
    r"[^&;#\s'\"<>]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """text with URL user info and secret query parameters replaced by ***."""
    if "://" not in text and "=" not in text:  # the common case, kept cheap: most log lines hold no URL
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _SECRET_PARAMETER.sub(lambda m: f"{m['name']}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A handler filter: each record's message (arguments merged) and traceback text go out redacted.

    On a handler, not a logger: a logger's filter sees only records logged on that very logger, a
    handler's sees every record it writes, from any library."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: the traceback's own lines are redacted too.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
