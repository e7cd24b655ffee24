"""Which workers to watch: a configured list of URLs, or every member of the consumer group.

Each Faust worker puts its web URL (``http://{web_host}:{web_port}``) in the metadata it joins the
group with (the assignor's client metadata, JSON), so the group itself says where its workers
answer; no registry is needed. A worker bound to every address advertises 0.0.0.0: the host the
broker saw it connect from stands in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kafka import KafkaAdminClient

# kafka-python warns that it cannot decode Faust's member metadata (not its own format; read here)
logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)

WILDCARDS = {"0.0.0.0", "::", "[::]", ""}


def configured_urls(text: str) -> list[str]:
    return [u.strip().rstrip("/") for u in text.split(",") if u.strip()]


def member_url(metadata: Any, client_host: str) -> str | None:
    """The URL in one member's group metadata (raw bytes or text), or None when it has none."""
    raw = metadata.decode("latin-1") if isinstance(metadata, bytes | bytearray) else str(metadata)
    start = raw.find('{"')
    while start >= 0:
        try:
            found, _ = json.JSONDecoder().raw_decode(raw[start:])
        except ValueError:
            start = raw.find('{"', start + 1)
            continue
        url = found.get("url") if isinstance(found, dict) else None
        if not isinstance(url, str) or not url:
            return None
        parts = urlsplit(url)
        if parts.hostname in WILDCARDS or parts.hostname is None:
            host = client_host.lstrip("/")
            netloc = f"{host}:{parts.port}" if parts.port else host
            url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return url.rstrip("/")
    return None


def group_urls(client_config: Mapping[str, Any], group: str) -> list[str]:
    """The web URLs of the group's current members (empty while the group has none)."""
    admin = KafkaAdminClient(**client_config, client_id="streamrec-dashboard")
    try:
        described = admin.describe_groups([group]).get(group, {})
    finally:
        admin.close()
    urls = set()
    for member in described.get("members") or []:
        url = member_url(member.get("member_metadata") or "", member.get("client_host") or "")
        if url:
            urls.add(url)
    return sorted(urls)
