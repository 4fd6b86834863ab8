"""meshwork: a service mesh and an orchestrator in one Python package."""

__version__ = "0.1.0"
