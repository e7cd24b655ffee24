"""Who may read a user's data over the worker's web port (``/users/<id>/``)."""

from __future__ import annotations

import hmac
import ipaddress

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def user_data_refusal(web_host: str, token: str, authorization: str | None) -> str | None:
    """None when the request may see user data, else why not (``app.web_token``)."""
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
            return None
        return "this endpoint needs the header 'Authorization: Bearer <app.web_token>'"
    if is_loopback(web_host):
        return None
    return (
        f"user data is not served on {web_host} without app.web_token "
        "(set STREAMREC_APP_WEB_TOKEN, or bind the web server to 127.0.0.1)"
    )
