"""Path normalisation: a table of spellings of /admin none of which may reach it, and properties."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from meshwork.core.security.attributes import RequestAttributes
from meshwork.core.security.authz import AuthzPolicy, compile_policies
from meshwork.core.security.pathnorm import (
    NormalizedPath,
    NormalizeOptions,
    PathNormalization,
    PathRejected,
    normalize_path,
    normalize_target,
)

DENY_ADMIN = AuthzPolicy(
    "deny-admin",
    "foo",
    {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]},
)
ALLOW_PUBLIC = AuthzPolicy(
    "allow-public", "foo", {"rules": [{"to": [{"operation": {"paths": ["/public/*"]}}]}]}
)

# Every spelling a client might use to reach /admin (or below it). Each must be refused with a
# 400 or normalised to a path the DENY policy denies; "ignore-case" rows rely on the authorizer
# being compiled with ignore_case_paths (for apps that serve /ADMIN as /admin).
SPELLINGS: list[tuple[str, bool]] = [
    ("/admin", False),
    ("//admin", False),
    ("///admin", False),
    ("/./admin", False),
    ("/.//admin", False),
    ("/admin/", False),
    ("/admin/.", False),
    ("/admin//", False),
    ("/admin/./", False),
    ("/admin/%2e", False),
    ("/admin\\", False),
    ("/%61dmin", False),
    ("/adm%69n", False),
    ("/%61%64%6d%69%6e", False),
    ("/%41DMIN", True),
    ("/ADMIN", True),
    ("/Admin/", True),
    ("/public/../admin", False),
    ("/PUBLIC/../admin", False),
    ("/public/%2e%2e/admin", False),
    ("/public/%2E%2E/admin", False),
    ("/public/.%2e/admin", False),
    ("/a/../admin", False),
    ("/a/b/../../admin", False),
    ("/../admin", False),
    ("/%2e%2e/admin", False),
    ("/admin%2F", False),
    ("/admin%2f", False),
    ("/admin%2Fsecret", False),
    ("/%2Fadmin", False),
    ("/%2fadmin", False),
    ("%2fadmin", False),
    ("/public%2F..%2Fadmin", False),
    ("/public%2f%2e%2e%2fadmin", False),
    ("\\admin", False),
    ("/\\admin", False),
    ("/public\\..\\admin", False),
    ("/public%5C..%5Cadmin", False),
    ("/public%5c..%5cadmin", False),
    ("/admin;x=1", False),
    ("/admin;x=1?y=2", False),
    ("/public/..;/admin", False),
    ("/admin#frag", False),
    ("/public#/../admin", False),
    ("/admin?x=1", False),
    ("/admin/?x=/public/", False),
    ("/admin/secret", False),
    ("/admin%00", False),
    ("/admin%", False),
    ("/admin%zz", False),
    ("/ad min", False),
    ("/admin\t", False),
    ("/admín", False),
    ("http://httpbin.foo/admin", False),
    ("HTTP://httpbin.foo//./admin?x", False),
]


def _authorizers(ignore_case: bool) -> tuple:
    return (
        compile_policies([DENY_ADMIN], ignore_case_paths=ignore_case),
        compile_policies([ALLOW_PUBLIC], ignore_case_paths=ignore_case),
    )


OPTION_SETS = {
    "default (DECODE_AND_MERGE_SLASHES)": NormalizeOptions(),
    "MERGE_SLASHES, escaped slashes rejected": NormalizeOptions(
        PathNormalization.MERGE_SLASHES, escaped_slashes="reject"
    ),
}


def test_table_is_large_enough() -> None:
    assert len(SPELLINGS) >= 30


@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
@pytest.mark.parametrize(("target", "ignore_case"), SPELLINGS, ids=[s for s, _ in SPELLINGS])
def test_no_spelling_reaches_admin(
    target: str, ignore_case: bool, options: NormalizeOptions
) -> None:
    result = normalize_target(target, options)
    if isinstance(result, PathRejected):
        assert result.status == 400
        return
    deny, allow_public = _authorizers(ignore_case)
    attrs = RequestAttributes(method="GET", path=result.target)
    verdict = deny.check(attrs)
    assert not verdict.allowed, f"{target!r} → {result.path!r} got past the DENY"
    assert verdict.body == "RBAC: access denied" and verdict.status == 403
    assert not allow_public.check(attrs).allowed, f"{target!r} → {result.path!r} allowed as public"


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/public/x", "/public/x"),
        ("/public//x/./y/../z", "/public/x/z"),
        ("/public/%7euser", "/public/~user"),
        ("/public/caf%c3%a9", "/public/caf%C3%A9"),
        ("/public/%2561", "/public/%2561"),  # one decoding only
        ("/public/a%2Fb", "/public/a/b"),
    ],
)
def test_public_paths_stay_public(target: str, path: str) -> None:
    result = normalize_target(target)
    assert isinstance(result, NormalizedPath) and result.path == path
    _, allow_public = _authorizers(False)
    assert allow_public.check(RequestAttributes(method="GET", path=result.path)).allowed


@pytest.mark.parametrize(
    ("mode", "path", "expected"),
    [
        (PathNormalization.NONE, "/a/../b//c%2Fd%61", "/a/../b//c%2Fd%61"),
        (PathNormalization.BASE, "/a/../b//c%2fd%61", "/b//c%2Fda"),
        (PathNormalization.BASE, "/a\\da", "/a/da"),
        (PathNormalization.MERGE_SLASHES, "/a//b", "/a/b"),
        (PathNormalization.MERGE_SLASHES, "/a//../b", "/a/b"),
        (PathNormalization.MERGE_SLASHES, "/a%2fb", "/a%2Fb"),
        (PathNormalization.DECODE_AND_MERGE_SLASHES, "/a%2fb", "/a/b"),
        (PathNormalization.DECODE_AND_MERGE_SLASHES, "/some%2fdata/%61%62%63", "/some/data/abc"),
        (PathNormalization.DECODE_AND_MERGE_SLASHES, "/some\\data", "/some/data"),
        (
            PathNormalization.DECODE_AND_MERGE_SLASHES,
            "/public/./data/abc/../xyz",
            "/public/data/xyz",
        ),
    ],
)
def test_modes(mode: PathNormalization, path: str, expected: str) -> None:
    assert normalize_path(path, NormalizeOptions(mode)) == expected


def test_query_is_kept_for_forwarding() -> None:
    result = normalize_target("/a/./b?x=/../y&z=%2F")
    assert result == NormalizedPath("/a/b", "x=/../y&z=%2F")
    assert result.target == "/a/b?x=/../y&z=%2F"


def test_options_star_and_path_params_keep() -> None:
    assert normalize_target("*") == NormalizedPath("*")
    kept = normalize_path("/a;v=1/b", NormalizeOptions(path_params="keep"))
    assert kept == "/a;v=1/b"


PATHS = st.lists(
    st.sampled_from(
        [
            "/",
            "/",
            "a",
            "b",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2f",
            "%5c",
            "%61",
            "\\",
            "%25",
            "%7E",
            "~",
            "A",
        ]
    ),
    max_size=14,
).map(lambda parts: "/" + "".join(parts))

MODES = st.sampled_from(list(PathNormalization))


@given(path=PATHS, mode=MODES)
@example(path="/a//..", mode=PathNormalization.MERGE_SLASHES)
@example(path="/.%2e/%2e", mode=PathNormalization.BASE)
def test_normalize_is_idempotent(path: str, mode: PathNormalization) -> None:
    options = NormalizeOptions(mode)
    once = normalize_path(path, options)
    if isinstance(once, PathRejected):
        return
    assert normalize_path(once, options) == once


@given(path=PATHS, mode=MODES.filter(lambda m: m is not PathNormalization.NONE))
def test_normalized_paths_have_no_dot_segments(path: str, mode: PathNormalization) -> None:
    out = normalize_path(path, NormalizeOptions(mode))
    if isinstance(out, PathRejected):
        return
    assert out.startswith("/")
    segments = out.split("/")
    assert "." not in segments and ".." not in segments
    assert "\\" not in out
    assert "%2e" not in out.lower() and "%61" not in out.lower()  # unreserved escapes decoded
    if mode in (PathNormalization.MERGE_SLASHES, PathNormalization.DECODE_AND_MERGE_SLASHES):
        assert "//" not in out
    if mode is PathNormalization.DECODE_AND_MERGE_SLASHES:
        assert "%2f" not in out.lower() and "%5c" not in out.lower()


@given(st.text(max_size=40))
def test_never_raises(target: str) -> None:
    result = normalize_target(target)
    assert isinstance(result, NormalizedPath | PathRejected)
