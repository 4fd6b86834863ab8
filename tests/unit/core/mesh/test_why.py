"""`meshwork why`'s explanation: the same decision the proxy makes, told in words."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from meshcases import bookinfo_services, get, manifests, table

from meshwork.core.mesh.route import match_route
from meshwork.core.mesh.why import explain


def test_bookinfo_jason_goes_to_reviews_v2_and_others_to_v1() -> None:
    t = table(manifests("bookinfo/networking/destination-rule-all.yaml",
                        "bookinfo/networking/virtual-service-reviews-test-v2.yaml"), bookinfo_services())  # fmt: skip
    jason = explain(t, get("reviews:9080", "/reviews/0", end_user="jason"))
    assert jason.verdict == "forward-with-retries"
    assert "cluster outbound|9080|v2|reviews.default.svc.cluster.local" in jason.lines
    other = explain(t, get("reviews:9080", "/reviews/0"))
    assert any(line.startswith("  skipped route") and "end-user" in line for line in other.lines)
    assert "cluster outbound|9080|v1|reviews.default.svc.cluster.local" in other.lines


def test_a_fault_abort_and_a_fault_delay_are_named() -> None:
    abort = table(manifests("bookinfo/networking/destination-rule-all.yaml",
                            "bookinfo/networking/virtual-service-ratings-test-abort.yaml"), bookinfo_services())  # fmt: skip
    e = explain(abort, get("ratings:9080", "/ratings/0", end_user="jason"))
    assert e.verdict == "fault-abort" and e.decision is not None and e.decision.status == 500
    delay = table(manifests("bookinfo/networking/destination-rule-all.yaml",
                            "bookinfo/networking/virtual-service-ratings-test-delay.yaml"), bookinfo_services())  # fmt: skip
    e = explain(delay, get("ratings:9080", "/ratings/0", end_user="jason"))
    assert e.verdict == "fault-delay" and any("delays 7s" in line for line in e.lines)


@given(st.floats(min_value=0, max_value=0.999), st.sampled_from(["jason", "alice", ""]))
def test_the_explained_decision_is_the_one_the_proxy_makes_for_that_draw(draw: float, user: str) -> None:
    t = table(manifests("bookinfo/networking/destination-rule-all.yaml",
                        "bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml"), bookinfo_services())  # fmt: skip
    req = get("reviews:9080", "/", **({"end_user": user} if user else {}))

    class Pinned(random.Random):
        def random(self) -> float:
            return draw

    told = explain(t, req, draw).decision
    done = match_route(t, req, Pinned(0))
    assert told is not None and told.cluster == done.cluster and told.action == done.action
