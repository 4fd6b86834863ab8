"""Security decisions, pure: workload identities, peer authentication, JWTs, authorization.

The shells that hold keys, speak TLS and fetch JWKS live in ``meshwork.control.ca``
and ``meshwork.proxy``; everything here is computation over values they hand in.

- ``identity``: SPIFFE ids (``spiffe://<td>/ns/<ns>/sa/<sa>``).
- ``pathnorm``: request-target normalisation (Istio pathNormalization) or a 400.
- ``select``: which policies apply to a workload (namespace, labels, root namespace).
- ``peerauth``: the effective mTLS mode of a workload's port (PeerAuthentication precedence).
- ``jwt``: JWKS parsing and JWS verification; ``requestauthn``: RequestAuthentication rules.
- ``attributes`` + ``authz_match`` + ``authz``: AuthorizationPolicy compiled into an
  ``Authorizer``; ``check(attrs)`` → ``Verdict`` (with its reason), ``explain`` for ``why``.
"""
