"""What the request guard (path normalisation, JWT, AuthorizationPolicy) costs per request.

The sidecar's inbound decision (``InboundDecider.decide``) is timed bare,
which is what a workload no policy selects runs (it gets no guard at all),
then behind a ``GuardedDecider`` with: one DENY policy (authz-deny's
deny-method-get-unless-admin), an ALLOW on paths plus a DENY, and a
RequestAuthentication + require-jwt with a valid RS256 and ES256 token, once
with the verified-token cache holding nothing (every request pays the
signature check: the cost before the cache) and once as it runs (the same
token repeated: a dict lookup). The engine's own cost per request (about 11 µs
of Python plus the kernel's share, see bench/proxy_bench.py) is the scale to
read these against.

Run: ``.venv/bin/python -m bench.guard_bench``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshwork.core.http1 import Request, RequestParser
from meshwork.core.security.jwt import jwk_from_public_key, sign
from meshwork.core.security.requestauthn import RequestAuthenticator, VerifiedTokens
from meshwork.proxy.guard import GuardedDecider, compile_guard
from meshwork.proxy.inbound import INBOUND_PORT_HEADER, AppPort, InboundDecider
from meshwork.proxy.plan import Decider, Downstream

N = 20_000
ISS = "testing@secure.istio.io"
DOWNSTREAM = Downstream("127.1.0.50", 15006)
PROXY = {"namespace": "foo", "labels": {"app": "httpbin"}}


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "foo"}, "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, **spec}}  # fmt: skip


DENY_GET = _policy("deny-method-get", {"action": "DENY", "rules": [
    {"to": [{"operation": {"methods": ["GET"]}}], "when": [{"key": "request.headers[x-token]", "notValues": ["admin"]}]}]})  # fmt: skip
ALLOW_IP = _policy("allow-path-ip", {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/ip", "/headers*"]}}]}]})  # fmt: skip
REQUIRE = _policy("require-jwt", {"action": "ALLOW", "rules": [{"from": [{"source": {"requestPrincipals": [f"{ISS}/{ISS}"]}}]}]})  # fmt: skip


def _request(head: str) -> Request:
    got = RequestParser().receive_request(head.encode())
    assert got is not None
    return got[0]


def _per_request(decider: Decider, request: Request) -> float:
    for _ in range(500):
        decider.decide(request, DOWNSTREAM)
    start = time.perf_counter()
    for _ in range(N):
        decider.decide(request, DOWNSTREAM)
    return (time.perf_counter() - start) / N * 1e6


def _uncached(decider: GuardedDecider, authn: RequestAuthenticator) -> GuardedDecider:
    """The same guard with a verified-token cache that holds nothing: every token is checked."""
    off = RequestAuthenticator(authn.rules, authn.warnings, VerifiedTokens(capacity=0))
    guard = dataclasses.replace(decider.guard, authn=off)
    return GuardedDecider(decider.inner, guard, destination_port=8080, port_header=INBOUND_PORT_HEADER)


def main() -> None:
    inner = InboundDecider("127.1.0.9", (AppPort(8080),))
    head = ("GET /headers HTTP/1.1\r\nHost: httpbin.foo:8000\r\nUser-Agent: curl/8\r\nAccept: */*\r\n"
            "x-token: admin\r\nx-meshwork-inbound-port: 8080\r\n{auth}\r\n")  # fmt: skip
    plain = _request(head.format(auth=""))
    rows = [("no policy selects the workload: no guard (reference)", _per_request(inner, plain))]
    base = rows[0][1]

    def guarded(raw: dict[str, Any]) -> GuardedDecider:
        guard = compile_guard({"proxy": PROXY, **raw})
        assert guard is not None
        return GuardedDecider(inner, guard, destination_port=8080, port_header=INBOUND_PORT_HEADER)

    rows.append(("one DENY policy (method + header condition)", _per_request(guarded({"authorizationPolicies": [DENY_GET]}), plain)))  # fmt: skip
    rows.append(("DENY + ALLOW on paths", _per_request(guarded({"authorizationPolicies": [DENY_GET, ALLOW_IP]}), plain)))  # fmt: skip
    rows.append(("same, a path to normalise (/x/../headers)", _per_request(
        guarded({"authorizationPolicies": [DENY_GET, ALLOW_IP]}), _request(head.format(auth="").replace("/headers", "/x/../headers", 1)))))  # fmt: skip
    for alg, key in (("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                     ("ES256", ec.generate_private_key(ec.SECP256R1()))):  # fmt: skip
        jwks = json.dumps({"keys": [jwk_from_public_key(key.public_key())]})
        token = sign({"iss": ISS, "sub": ISS, "exp": time.time() + 3600}, key, alg)
        ra = {"metadata": {"name": "jwt", "namespace": "foo"}, "spec": {"jwtRules": [{"issuer": ISS, "jwks": jwks}]}}
        request = _request(head.format(auth=f"Authorization: Bearer {token}\r\n"))
        decider = guarded({"authorizationPolicies": [REQUIRE], "requestAuthentications": [ra]})
        authn = decider.guard.authn
        assert authn is not None
        rows.append((f"RequestAuthentication + require-jwt, valid {alg} token, verified every time (cache off)",
                     _per_request(_uncached(decider, authn), request)))  # fmt: skip
        rows.append((f"same, {alg} token repeated (verified-token cache)", _per_request(decider, request)))
    print(f"python {sys.version.split()[0]}, {N} decisions each\n")
    print("| inbound decision per request | µs | added by the guard |")
    print("|---|---|---|")
    for label, us in rows:
        print(f"| {label} | {us:.1f} | {us - base:+.1f} µs |")


if __name__ == "__main__":
    main()
