"""``meshwork certs``' table: kubectl's layout, expiry as a human duration from a given ``now``."""

from __future__ import annotations

from datetime import UTC, datetime

from meshwork.cli.certs import cert_rows
from meshwork.cli.printers import GET_MINWIDTH, GET_PADDING, tabwrite

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ITEMS = [
    {"type": "root", "name": "meshwork root CA", "serial": "ab", "state": "Retiring", "chain": 1,
     "notAfter": "2039-12-30T00:00:00Z", "proxy": None, "retireAt": "2030-01-01T01:00:00Z"},
    {"type": "workload", "name": "spiffe://cluster.local/ns/default/sa/web", "serial": "cd", "state": "Valid",
     "chain": 2, "notAfter": "2030-01-01T00:02:00Z", "proxy": "sidecar~1~w.default~default.svc.cluster.local"},
    {"type": "workload", "name": "spiffe://cluster.local/ns/default/sa/old", "serial": "ef", "state": "Valid",
     "chain": 1, "notAfter": "2029-12-31T23:00:00Z"},
]


def test_rows() -> None:
    rows = cert_rows(ITEMS, NOW)
    assert rows[0] == ["TYPE", "NAME", "SERIAL", "STATE", "NOT AFTER", "EXPIRES IN"]
    assert [r[5] for r in rows[1:]] == ["10y", "2m", "expired"]
    text = tabwrite(rows, minwidth=GET_MINWIDTH, padding=GET_PADDING)
    assert text.splitlines()[0].startswith("TYPE       NAME")


def test_wide_rows_add_chain_proxy_and_retirement() -> None:
    rows = cert_rows(ITEMS, NOW, wide=True)
    assert rows[0][6:] == ["CHAIN", "PROXY", "IN BUNDLE UNTIL"]
    assert rows[1][6:] == ["1", "<none>", "2030-01-01T01:00:00Z"]
    assert rows[2][7] == "sidecar~1~w.default~default.svc.cluster.local"
