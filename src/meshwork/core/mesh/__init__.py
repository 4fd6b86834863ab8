"""The mesh's pure decisions: Istio traffic management without I/O.

``snapshot`` (what a proxy is sent) -> ``compile`` (its routing table, types
in ``table``) -> ``route`` (one request's decision) -> ``lb`` (which endpoint)
with ``outlier`` (which endpoints are out) and ``pool`` (circuit breakers);
``flags`` holds Envoy's response flags and local-reply bodies. The proxy
(``meshwork.proxy``) carries the decisions out; nothing here does I/O, reads
the clock or draws random numbers of its own.
"""
