"""The bind shim's decisions: who gets it, how LD_PRELOAD and PATH are merged, low ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshwork.agent.binding import (
    ADDRESS_ENV,
    OPT_OUT_ANNOTATION,
    PRELOAD_ENV,
    low_port_problem,
    may_bind_low_ports,
    preload,
    python_path,
    rewrite_enabled,
    shim_name,
)

LIB = Path("/data/lib/meshwork-bindshim-0123.so")


@pytest.mark.parametrize(("annotations", "enabled"), [
    (None, True), ({}, True), ({OPT_OUT_ANNOTATION: "true"}, True), ({OPT_OUT_ANNOTATION: "false"}, False),
    ({OPT_OUT_ANNOTATION: " False "}, False), ({"other": "false"}, True),
])  # fmt: skip
def test_the_rewrite_is_on_unless_the_pod_says_false(annotations: dict[str, str] | None, enabled: bool) -> None:
    assert rewrite_enabled(annotations) is enabled


@pytest.mark.parametrize(("own", "want"), [
    (None, str(LIB)),
    ("", str(LIB)),
    ("/usr/lib/libjemalloc.so", f"/usr/lib/libjemalloc.so {LIB}"),
    ("/a.so:/b.so", f"/a.so:/b.so {LIB}"),
    (f"/a.so {LIB}", f"/a.so {LIB}"),  # already there (a restart with the same env): not twice
])  # fmt: skip
def test_the_shim_comes_after_the_apps_own_preloads(own: str | None, want: str) -> None:
    env = {"PATH": "/bin"} if own is None else {"PATH": "/bin", PRELOAD_ENV: own}
    preload(env, LIB, "127.129.0.4")
    assert env == {"PATH": "/bin", PRELOAD_ENV: want, ADDRESS_ENV: "127.129.0.4"}


def test_a_new_source_is_a_new_library_file() -> None:
    assert shim_name(b"int x;") == shim_name(b"int x;")
    assert shim_name(b"int x;") != shim_name(b"int y;")
    assert shim_name(b"").endswith(".so")


@given(st.lists(st.sampled_from(["/usr/bin", "/bin", "/usr/local/bin", "/opt/venv/bin", ""]), max_size=6))
def test_path_keeps_the_machines_order_and_adds_pythons_dir_when_missing(parts: list[str]) -> None:
    got = python_path(os.pathsep.join(parts), "/opt/venv/bin").split(os.pathsep)
    assert "" not in got  # an empty entry would mean the working directory
    kept = [p for p in parts if p]
    if "/opt/venv/bin" not in kept:
        assert got == [*kept, "/opt/venv/bin"]
    else:
        assert got == kept


STATUS = "Name:\tpython\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nCapEff:\t{eff}\nCapAmb:\t{amb}\n"
ALL = "000001ffffffffff"
NONE = "0000000000000000"
BIND_ONLY = f"{1 << 10:016x}"


@pytest.mark.parametrize(("euid", "eff", "amb", "allowed"), [
    (0, ALL, NONE, True),  # root
    (0, f"{0x1FFFFFFFFFF & ~(1 << 10):016x}", NONE, False),  # root in a container that dropped it
    (1000, NONE, NONE, False),
    (1000, BIND_ONLY, NONE, False),  # effective but not ambient: lost at exec
    (1000, NONE, BIND_ONLY, True),
])  # fmt: skip
def test_low_ports_need_the_capability_the_app_will_hold(euid: int, eff: str, amb: str, allowed: bool) -> None:
    assert may_bind_low_ports(STATUS.format(uid=euid, eff=eff, amb=amb), euid) is allowed


EACCES_LOG = b"Traceback ...\nPermissionError: [Errno 13] Permission denied\n"


def test_a_denied_low_port_is_named_with_the_ways_out() -> None:
    message = low_port_problem([8080, 80], EACCES_LOG, start=1024, allowed=False, uid=1000)
    assert message is not None
    assert "port 80" in message and "ip_unprivileged_port_start (1024)" in message and "uid 1000" in message
    assert "ip_unprivileged_port_start=80" in message


@pytest.mark.parametrize(("ports", "log", "start", "allowed"), [
    ([80], EACCES_LOG, 1024, True),  # privileged: some other failure
    ([8080], EACCES_LOG, 1024, False),  # no low port
    ([80], EACCES_LOG, 0, False),  # the sysctl lets everyone bind any port
    ([80], b"ImportError: No module named httpbin\n", 1024, False),  # the app failed for another reason
])  # fmt: skip
def test_no_low_port_message_without_all_the_evidence(ports: list[int], log: bytes, start: int, allowed: bool) -> None:
    assert low_port_problem(ports, log, start=start, allowed=allowed, uid=1000) is None
