"""meshwork: a service mesh and an orchestrator in one Python package."""

from meshwork import _accel

__version__ = "0.1.0"

# The proxy's hot path, compiled with mypyc, when a build of exactly these sources exists.
_accel.install()
