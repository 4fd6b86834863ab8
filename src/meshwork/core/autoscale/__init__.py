"""Horizontal autoscaling decisions (kube-controller-manager's HPA controller, pure).

* ``replicas``: the replica calculator, one metric at a time;
* ``behavior``: stabilisation windows and scaling policies;
* ``decide``: one sync of an HPA, from readings to the scale and status;
* ``recommend``: container requests and limits from observed usage.

Nothing here reads metrics, writes objects or looks at a clock.
"""
