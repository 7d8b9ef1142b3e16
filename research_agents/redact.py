"""Secrets out of everything written or printed: one scrub for a secret in any encoding, one mask
for credentials in URLs.

`scrub(text, secrets)` replaces each secret with *** wherever it appears: raw, as JSON string
escapes (`\\u0073k-...`, also escaped twice, any mix of escaped and plain characters),
URL-encoded (`%73k-...`), or base64. It works on the raw text (decoding escapes only to find
the secret), so JSON stays JSON.
`mask_url(url)` hides the password of `scheme://user:password@host` (a user name alone, which
may be a token, is hidden whole); `mask_urls(text)` does so for every URL in a text.
`without_password(url)` keeps a URL's user name and drops its password (what run.json records of
`--storage`: the database stays named, and the server's password comes from elsewhere).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET = 4  # shorter strings are not scrubbed (they would match everywhere)
# one decoded character each: a JSON escape, a %XX escape, or any one character
_TOKEN = re.compile(r'\\{1,2}u[0-9a-fA-F]{4}|\\[\\/"bfnrt]|%[0-9a-fA-F]{2}|.', re.S)
_SIMPLE = {"\\\\": "\\", "\\/": "/", '\\"': '"', "\\b": "\b", "\\f": "\f", "\\n": "\n", "\\r": "\r", "\\t": "\t"}
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#@]+)@")


def _decode_token(tok: str) -> str:
    if len(tok) >= 6 and tok[-5] == "u" and tok[0] == "\\":  # \uXXXX, or \\uXXXX once more escaped
        return chr(int(tok[-4:], 16))
    if len(tok) == 3 and tok[0] == "%":
        return chr(int(tok[1:], 16))
    return _SIMPLE.get(tok, tok)


def _base64_forms(secret: str) -> set[str]:
    raw = secret.encode()
    forms = set()
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        for pad in range(3):  # the secret at each alignment inside a longer base64 stream
            full = enc(b"\0" * pad + raw).decode()  # characters made of the secret's bits alone:
            body = full[-(-8 * pad // 6): 8 * (pad + len(raw)) // 6]  # what follows cannot change them
            if len(body) >= 8:
                forms.add(body)
    return forms


def scrub(text: str, secrets: list[str | None] | tuple[str | None, ...]) -> str:
    """`text` with every secret (in any encoding above) replaced by ***."""
    for secret in secrets:
        if not secret or len(secret) < MIN_SECRET:
            continue
        text = text.replace(secret, MASK)
        if "\\" in text or "%" in text:
            text = _scrub_escaped(text, secret)
        for form in _base64_forms(secret):
            text = text.replace(form, MASK)
    return text


def _scrub_escaped(text: str, secret: str) -> str:
    tokens = _TOKEN.findall(text)
    decoded = "".join(_decode_token(t) for t in tokens)
    if secret not in decoded:
        return text
    # decoded position i is token i: replace the tokens that decode to the secret
    out: list[str] = []
    i = 0
    n = len(secret)
    while i < len(tokens):
        if decoded.startswith(secret, i):
            out.append(MASK)
            i += n
        else:
            out.append(tokens[i])
            i += 1
    return "".join(out)


def url_secrets(url: str | None) -> list[str]:
    """The credentials in a URL (user name and password, decoded and as written)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.username, parts.password]
    found += [unquote(x) for x in found if x]
    return [x for x in found if x]


def mask_url(url: str | None) -> str | None:
    """`url` without its credentials: scheme://user:***@host/..., or ***@host when only a user is given."""
    if not url:
        return url
    return mask_urls(url)


def mask_urls(text: str) -> str:
    """Every `scheme://user:password@` in a text with its password (or lone user name) masked."""
    def masked(m: re.Match) -> str:
        user, sep, _password = m.group(2).partition(":")
        return f"{m.group(1)}{user}:{MASK}@" if sep else f"{m.group(1)}{MASK}@"

    return _USERINFO.sub(masked, text)


def without_password(url: str | None) -> str | None:
    """`url` with its password, if any, replaced by *** (`scheme://user:***@host`); a user name alone
    is kept (it names who connects; the password then comes from PGPASSWORD or ~/.pgpass)."""
    if not url:
        return url

    def masked(m: re.Match) -> str:
        user, sep, _password = m.group(2).partition(":")
        return f"{m.group(1)}{user}:{MASK}@" if sep else m.group(0)

    return _USERINFO.sub(masked, url)


def has_masked_password(url: str | None) -> bool:
    """Whether `url` holds a password masked by `without_password` (it cannot connect as it is)."""
    return bool(url) and any(m.group(2).partition(":")[2] == MASK for m in _USERINFO.finditer(url or ""))


def drop_masked_password(url: str) -> str:
    """`scheme://user:***@host` as `scheme://user@host` (the password then from the environment)."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2).partition(':')[0]}@"
                         if m.group(2).partition(":")[2] == MASK else m.group(0), url)


__all__ = ["MASK", "drop_masked_password", "has_masked_password", "mask_url", "mask_urls", "scrub", "url_secrets",
           "without_password"]
