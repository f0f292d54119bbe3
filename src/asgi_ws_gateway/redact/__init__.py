"""Redaction: the one place that decides what a credential looks like before text reaches a log.

A client can send a credential in any position: a query parameter (``?access_token=``,
``?subscription-key=``), a header (``Authorization``, ``Cookie``, a subscription-key header, a
configured token header) or ``Sec-WebSocket-Protocol``. The gateway never writes a query string's
values, a sensitive header's value or anything shaped like a JWT to a log line: every query value
becomes ``REDACTED`` (names are kept, they help debugging), so do sensitive header values.

What is redacted is decided here; :mod:`~asgi_ws_gateway.log_redaction` applies it to ``logging``'s
records (its filter and the record factory that :func:`~asgi_ws_gateway.log_redaction.install` puts in
place), and spans, access lines, the management API and error messages call it directly.

The names below are imported from here; each has one home:

- :mod:`.credential_names`: which headers, parameters and settings hold a credential; ``REDACTED``.
- :mod:`.patterns`: where a credential sits in text, and what each find is written as.
- :mod:`.credential_paths`: the path segments a configuration fills with a credential (``/ws/{api_key}``).
- :mod:`.text`: text, free text, paths and URLs as logs write them; the configured headers and paths.
- :mod:`.url_credentials`: a configured URL shown with only its credentials hidden.
- :mod:`.error_text`: an error message without the secrets it quotes.
- :mod:`.escaping`: client text on one line (control and bidi characters escaped).
- :mod:`.frames`: websockets' frames as its debug lines show them, the peer's text redacted; imported
  when first read (:mod:`.._lazy`), as websockets is the gateway's and not the command line's.
- :mod:`.documents`: the secrets of a configuration document (``GET /config``, ``export``) and the
  ``REDACTED`` an exported file holds for them; imported by name (it needs pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .credential_names import (
    CREDENTIAL_VALUES,
    CREDENTIAL_WORDS,
    REDACTED,
    SENSITIVE_HEADERS,
    credential_headers,
    credential_setting,
    is_credential_header,
    is_credential_name,
    is_credential_parameter,
    redact_headers,
)
from .credential_paths import credential_path_templates
from .error_text import redact_input, redact_values
from .escaping import CONTROL_CHARACTERS, printable, printable_json
from .patterns import redact_query
from .text import (
    add_credential_paths,
    add_secret_values,
    add_sensitive_headers,
    redact_encoded_path,
    redact_free_text,
    redact_free_text_remembered,
    redact_path,
    redact_targets,
    redact_text,
    redact_url,
    redact_url_remembered,
)
from .url_credentials import redact_url_credentials

if TYPE_CHECKING:
    from .frames import frame_text, is_frame

if not TYPE_CHECKING:  # websockets' frames (its package, ~20 ms) are the log filter's: the command line does without
    __getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(["frame_text", "is_frame"], ".frames"))

__all__ = [
    "CONTROL_CHARACTERS",
    "CREDENTIAL_VALUES",
    "CREDENTIAL_WORDS",
    "REDACTED",
    "SENSITIVE_HEADERS",
    "add_credential_paths",
    "add_secret_values",
    "add_sensitive_headers",
    "credential_headers",
    "credential_path_templates",
    "credential_setting",
    "frame_text",
    "is_credential_header",
    "is_credential_name",
    "is_credential_parameter",
    "is_frame",
    "printable",
    "printable_json",
    "redact_encoded_path",
    "redact_free_text",
    "redact_free_text_remembered",
    "redact_headers",
    "redact_input",
    "redact_path",
    "redact_query",
    "redact_targets",
    "redact_text",
    "redact_url",
    "redact_url_credentials",
    "redact_url_remembered",
    "redact_values",
]
