"""Batch work queues and admission, in Kueue's shapes. Pure.

A Job or Workflow labelled ``kueue.x-k8s.io/queue-name: <LocalQueue>`` waits
(a Job suspended, a Workflow not started) until the LocalQueue's ClusterQueue
admits it within its quota. The modules, each with its rule in its docstring:

* ``workload``: what the queue sees of a Job or Workflow (requests of the
  whole gang, priority, expected duration, admitted or not);
* ``policy``: the order waiting work is tried in (FIFO, Priority,
  ShortestJobFirst with ageing);
* ``admission``: which waiting workloads fit the quota now (StrictFIFO /
  BestEffortFIFO, gang admission, flavors);
* ``reconcile``: one ClusterQueue's pass as actions (admission writes and
  statuses), run by ``meshwork.control.queues``.
"""
