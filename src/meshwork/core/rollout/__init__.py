"""Argo Rollouts' decisions, pure: canary and blue-green progression, traffic
weights, and AnalysisRun judgement.

What lives here: ``reconcile_rollout`` (``reconcile``) and the parts it uses
(``replicas``: ReplicaSets named ``<rollout>-<hash>``; ``traffic``: Service
selectors, DestinationRule subsets and VirtualService weights; ``canary`` and
``bluegreen``: the strategies), ``analysis`` (an AnalysisRun's metrics judged
from its measurements), ``jobs`` (the job provider's Jobs and the
measurements they give) and ``expr`` (the condition language).

What must not: I/O, a clock (``now`` is a parameter), or taking measurements
(``meshwork.control.rollouts`` does, and hands the results in).
"""
