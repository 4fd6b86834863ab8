"""The store interface that every part of meshwork writes through.

Nothing outside ``meshwork.control.store`` knows which backend runs (SQLite for
one machine, etcd for several servers). The interface is etcd's model made
small:

* One global, strictly increasing **revision**. Every successful create,
  update or delete takes the next revision.
* A record's ``mod_revision`` is the revision of its last write, and the
  stored JSON carries it as ``metadata.resourceVersion`` (a decimal string),
  so an object read back can be written again with optimistic concurrency.
* ``update``/``delete`` with ``expected_revision`` succeed only if the record's
  ``mod_revision`` still equals it (compare-and-swap); otherwise ``Conflict``.
* ``watch(prefix, from_revision)`` yields every change with revision
  ``> from_revision`` under ``prefix``, each exactly once and in revision
  order, then keeps following live changes. If history before
  ``from_revision`` was compacted away it raises ``Gone``.
* A write returns only after it is durable (fsync): an acknowledged write
  survives SIGKILL of the process.

Keys are plain strings, ``<resource>/<namespace>/<name>`` for namespaced kinds
and ``<resource>//<name>`` for cluster-scoped ones (``pods/default/web-1``,
``virtualservices.networking.istio.io/default/reviews``, ``nodes//node-1``).
A prefix ends in ``/`` (``pods/`` for all pods, ``pods/default/`` for one
namespace).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, slots=True)
class Record:
    """One stored object.

    ``value`` is the object's compact JSON encoding, with
    ``metadata.resourceVersion`` equal to ``str(mod_revision)``.
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change, past tense. For DELETED, ``record`` is the last value, with
    ``mod_revision`` (and ``metadata.resourceVersion``) set to the revision of
    the delete."""

    type: EventType
    record: Record

    @property
    def revision(self) -> int:
        return self.record.mod_revision


class Store(Protocol):
    """The store seam: SQLite and etcd implement it; callers never know which."""

    @property
    def revision(self) -> int:
        """The revision of the newest committed write (0 for an empty store)."""
        ...

    async def get(self, key: str) -> Record:
        """The record at ``key``; raises ``NotFound``."""
        ...

    async def list(self, prefix: str) -> tuple[list[Record], int]:
        """Every record whose key starts with ``prefix``, sorted by key, and the
        revision they were read at (a consistent snapshot)."""
        ...

    async def create(self, key: str, obj: dict[str, Any]) -> Record:
        """Store ``obj`` at a new key; raises ``AlreadyExists``.

        The store sets ``obj["metadata"]["resourceVersion"]`` to the new revision.
        """
        ...

    async def update(
        self, key: str, obj: dict[str, Any], expected_revision: int | None = None
    ) -> Record:
        """Replace the record at ``key``; raises ``NotFound``, or ``Conflict``
        when ``expected_revision`` is given and differs from its mod_revision."""
        ...

    async def delete(self, key: str, expected_revision: int | None = None) -> Record:
        """Remove ``key`` and return its last value at the delete's revision;
        raises ``NotFound`` or ``Conflict`` as ``update`` does."""
        ...

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` after ``from_revision``; raises ``Gone`` if compacted."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history up to and including ``revision``."""
        ...

    @property
    def compacted_revision(self) -> int:
        """The newest revision that history no longer holds (0: nothing compacted)."""
        ...

    async def close(self) -> None:
        """Stop background work and release files; pending writes finish first."""
        ...
