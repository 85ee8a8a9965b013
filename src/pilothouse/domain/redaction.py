"""Secrets kept out of what is shown or stored: the password of a URL's userinfo
(``http://bob:HUNTER2@host`` -> ``http://bob:<redacted>@host``) and the values of request headers.
What runs keeps the real values in memory; what renders, logs, labels or stores passes through here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"

# scheme://userinfo@ : the userinfo is everything up to the last '@' before the path
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")
# the value of a query parameter of a URL (?api_key=..., &token=...): as likely a key as anything else
_QUERY_VALUE = re.compile(r"(?P<key>[?&][^=&#\s]+)=(?P<value>[^&#\s]*)")


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced (the user name kept: it says which account);
    a userinfo without a password (``http://TOKEN@host``) may itself be the secret and is replaced
    whole; so are the values of its query parameters (``?api_key=...``), names kept. Text that is
    not such a URL comes back unchanged."""

    def replace(match: re.Match[str]) -> str:
        user, colon, _password = match.group("userinfo").partition(":")
        kept = f"{user}:{REDACTED}" if colon else REDACTED
        return f"{match.group('scheme')}{kept}@"

    if "://" in url and "?" in url:
        head, query = url.split("?", 1)
        url = head + _QUERY_VALUE.sub(lambda m: f"{m.group('key')}={REDACTED}", "?" + query)
    if "@" not in url:
        return url
    return _USERINFO.sub(replace, url)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Header names kept, every value replaced (a header of a target or an upstream is as likely an
    API key as anything else), except ``${ENV}`` references, which name a secret without holding it."""
    return {
        str(name): value if isinstance(value, str) and value.startswith("${") else REDACTED
        for name, value in headers.items()
    }
