"""Client security from settings, for the two client libraries the project uses."""

from __future__ import annotations

import ssl
from typing import Any

from streamrec.settings import KafkaSettings


def ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    """A verifying TLS context for SSL/SASL_SSL listeners (None for plaintext)."""
    if not k.security_protocol.endswith("SSL"):
        return None
    ctx = ssl.create_default_context(cafile=k.ssl_cafile or None)
    if k.ssl_certfile:
        ctx.load_cert_chain(k.ssl_certfile, k.ssl_keyfile or None)
    return ctx


def aiokafka_config(k: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients."""
    cfg: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in k.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": k.security_protocol,
    }
    ctx = ssl_context(k)
    if ctx is not None:
        cfg["ssl_context"] = ctx
    if k.security_protocol.startswith("SASL"):
        cfg.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password,
        )
    return cfg


def faust_credentials(k: KafkaSettings) -> Any:
    """``broker_credentials`` for a Faust app (None for plaintext)."""
    import faust

    ctx = ssl_context(k)
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password,
            ssl_context=ctx,
            mechanism=k.sasl_mechanism,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None
