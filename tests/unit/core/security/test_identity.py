"""SPIFFE workload identities: parse, format, refuse what is not one."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.core.security.identity import SpiffeId


def test_uri_and_principal() -> None:
    sid = SpiffeId("cluster.local", "default", "bookinfo-productpage")
    assert sid.uri == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert sid.principal == "cluster.local/ns/default/sa/bookinfo-productpage"
    assert str(sid) == sid.uri


@pytest.mark.parametrize(
    "text", ["spiffe://cluster.local/ns/foo/sa/bar", "cluster.local/ns/foo/sa/bar"]
)
def test_parse_uri_or_principal(text: str) -> None:
    assert SpiffeId.parse(text) == SpiffeId("cluster.local", "foo", "bar")


@pytest.mark.parametrize(
    "text",
    [
        "spiffe://cluster.local/ns/foo",
        "spiffe://cluster.local/namespace/foo/sa/bar",
        "spiffe://cluster.local/ns/foo/serviceaccount/bar",
        "spiffe://Cluster.Local/ns/foo/sa/bar",
        "spiffe://cluster.local/ns/Foo/sa/bar",
        "spiffe://cluster.local/ns/foo/sa/bar/extra",
        "spiffe://cluster.local/ns//sa/bar",
        "",
    ],
)
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        SpiffeId.parse(text)


NAME = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(td=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True), ns=NAME, sa=NAME)
def test_round_trip(td: str, ns: str, sa: str) -> None:
    sid = SpiffeId(td, ns, sa)
    assert SpiffeId.parse(sid.uri) == sid
    assert SpiffeId.parse(sid.principal) == sid
