"""Workers are found through the group: the URL each Faust worker joined with."""

from __future__ import annotations

from streamrec.dashboard.discover import configured_urls, member_url

# the layout a Faust 0.11 worker sends (consumer protocol subscription, then its JSON user data)
FAUST_METADATA = (
    b"\x00\x04\x00\x00\x00\x02\x00\x0fstreamrec.click\x00\x10streamrec.browse\x00\x00\x00\x98"
    b'{"assignment":{"actives":{},"standbys":{}},"url":"http://10.1.2.3:6066",'
    b'"changelog_distribution":{},"external_topic_distribution":{},"topic_groups":{}}'
)


def test_the_url_is_read_from_faust_member_metadata():
    assert member_url(FAUST_METADATA, "/10.9.9.9") == "http://10.1.2.3:6066"
    assert member_url(FAUST_METADATA.decode("latin-1"), "/10.9.9.9") == "http://10.1.2.3:6066"


def test_a_wildcard_bind_is_replaced_by_the_host_the_broker_saw():
    wild = FAUST_METADATA.replace(b"10.1.2.3", b"0.0.0.0")
    assert member_url(wild, "/10.9.9.9") == "http://10.9.9.9:6066"


def test_members_without_a_url_are_skipped():
    assert member_url(b"\x00\x04\x00\x00\x00\x00", "/h") is None
    assert member_url(b'{"not": "faust"}', "/h") is None
    assert member_url(b"{broken", "/h") is None


def test_configured_urls():
    assert configured_urls(" http://a:1/, http://b:2 ,") == ["http://a:1", "http://b:2"]
