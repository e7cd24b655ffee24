from __future__ import annotations

import pytest

from streams.web_auth import is_loopback, user_data_refusal


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "worker-0.svc", ""])
def test_hosts_beyond_this_machine(host: str) -> None:
    assert not is_loopback(host)


def test_without_a_token_only_a_loopback_bind_serves_user_data() -> None:
    assert user_data_refusal("127.0.0.1", "", None) is None
    why = user_data_refusal("0.0.0.0", "", None)
    assert why is not None and "app.web_token" in why


def test_with_a_token_every_bind_needs_it() -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        assert user_data_refusal(host, "s3cret", "Bearer s3cret") is None
        assert user_data_refusal(host, "s3cret", "bearer s3cret") is None
        assert user_data_refusal(host, "s3cret", None) is not None
        assert user_data_refusal(host, "s3cret", "Bearer wrong") is not None
        assert user_data_refusal(host, "s3cret", "s3cret") is not None
