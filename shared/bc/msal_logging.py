"""msal logs each token event at DEBUG, redacting tokens but not the authorization code or the PKCE
verifier it sent. This filter masks those (and any token-like field) before a handler sees them."""
from __future__ import annotations

import logging
import re

_SECRET_FIELDS = re.compile(
    r'("(?:code|code_verifier|refresh_token|access_token|id_token|client_secret|client_assertion|state|nonce)"\s*:\s*)"[^"]*"'
)
_MSAL_LOGGERS = ("msal.token_cache", "msal.application", "msal.authority", "msal.telemetry",
                 "msal.oauth2cli.oauth2", "msal.oauth2cli.oidc", "msal.oauth2cli.http", "msal.throttled_http_client")


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_FIELDS.sub(r'\1"********"', message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def install() -> None:
    """Attach the filter once to every msal logger (a logger's filter sees only its own records)."""
    for name in _MSAL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
