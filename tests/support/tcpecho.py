"""Istio's tcp-echo sample as the TCP tests use it: a second version, and the bound a weighted split is held to.

Our conformance copy has only tcp-echo v1; ``V2`` is the v2 Deployment of
Istio's ``tcp-echo-services.yaml`` (it answers ``two <line>``).
"""

from __future__ import annotations

import math

V2 = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tcp-echo-v2
  labels:
    app: tcp-echo
    version: v2
spec:
  replicas: 1
  selector:
    matchLabels:
      app: tcp-echo
      version: v2
  template:
    metadata:
      labels:
        app: tcp-echo
        version: v2
    spec:
      containers:
      - name: tcp-echo
        image: registry.istio.io/release/tcp-echo-server:1.3
        imagePullPolicy: IfNotPresent
        args: [ "9000,9001,9002", "two" ]
        ports:
        - containerPort: 9000
        - containerPort: 9001
"""


def binomial_interval(n: int, p: float, alpha: float) -> tuple[int, int]:
    """The counts [lo, hi] holding all but at most ``alpha`` of Binomial(n, p) (alpha/2 per tail)."""

    def pmf(k: int) -> float:
        return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                        + k * math.log(p) + (n - k) * math.log1p(-p))  # fmt: skip

    lo, tail = 0, 0.0
    while tail + pmf(lo) <= alpha / 2:
        tail += pmf(lo)
        lo += 1
    hi, tail = n, 0.0
    while tail + pmf(hi) <= alpha / 2:
        tail += pmf(hi)
        hi -= 1
    return lo, hi
