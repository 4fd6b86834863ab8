"""Argo-style workflows, decided purely: expressions, nodes, the engine, and the
controller's reconcile. The shell that runs it is ``meshwork.control.workflows``."""
