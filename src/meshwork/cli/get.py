"""``meshwork get``: fetch objects and print them as kubectl does, or follow them with ``-w``.

What lives here: turning targets into list/get requests, kubectl's rules for
what to print (``kind/`` prefixes when several kinds are shown, one object or
a ``List`` for ``-o yaml|json``, "No resources found" on stderr), and the
watch loop (relist on 410 Gone, re-watch when the server ends the stream).

What must not live here: column definitions or layout (``columns``/``printers``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meshwork.cli.printers import (
    build_table,
    no_resources_message,
    render_names,
    render_objects,
    render_table,
    to_json,
    to_yaml,
)
from meshwork.cli.resolve import Target, kind_label
from meshwork.client import Client
from meshwork.errors import ApiError, BadRequest, Gone, NotFound
from meshwork.model.kinds import KindInfo

Echo = Callable[[str], None]

# A watch the server ends at once (and again, and again) must not become a busy
# loop of reconnects: wait this long before watching again after an empty stream.
REWATCH_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class GetOptions:
    namespace: str
    all_namespaces: bool = False
    label_selector: str | None = None
    field_selector: str | None = None
    output: str | None = None  # None (table), wide, yaml, json, name
    show_labels: bool = False
    with_kind: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


def with_type(obj: dict[str, Any], info: KindInfo) -> dict[str, Any]:
    """An item of a list, with ``apiVersion`` and ``kind`` filled in when the server left them out."""
    if "apiVersion" in obj and "kind" in obj:
        return obj
    return {"apiVersion": info.api_version, "kind": info.kind, **obj}


def fetch(
    client: Client, target: Target, opts: GetOptions, err: Echo
) -> tuple[list[dict[str, Any]], int]:
    """The objects of one target and how many named ones could not be fetched."""
    info = target.info
    namespace = None if (opts.all_namespaces or not info.namespaced) else opts.namespace
    if target.names:
        if opts.all_namespaces and info.namespaced:
            raise BadRequest("a resource cannot be retrieved by name across all namespaces")
        found, failed = [], 0
        for name in target.names:
            try:
                found.append(with_type(client.get(info, namespace, name), info))
            except NotFound as exc:
                failed += 1
                err(f"Error from server (NotFound): {exc.message}")
        return found, failed
    listed = client.list(
        info, namespace, label_selector=opts.label_selector, field_selector=opts.field_selector
    )
    return [with_type(i, info) for i in listed.get("items") or [] if isinstance(i, dict)], 0


def run_get(
    client: Client, targets: Sequence[Target], opts: GetOptions, out: Echo, err: Echo
) -> int:
    """Print the targets; return the exit status (1 if any named object was missing)."""
    fetched: list[tuple[Target, list[dict[str, Any]]]] = []
    failures = 0
    for target in targets:
        items, failed = fetch(client, target, opts, err)
        fetched.append((target, items))
        failures += failed
    everything = [obj for _, items in fetched for obj in items]
    named = any(t.names for t in targets)
    if opts.output in ("yaml", "json"):
        if everything or not named:
            single = len(targets) == 1 and len(targets[0].names) == 1
            out(render_objects(everything, opts.output, single=single).rstrip("\n"))
        return 1 if failures else 0
    if not everything:
        if not named:
            namespaced = any(t.info.namespaced for t in targets)
            err(
                no_resources_message(
                    opts.namespace, all_namespaces=opts.all_namespaces, namespaced=namespaced
                )
            )
        return 1 if failures else 0
    if opts.output == "name":
        for target, items in fetched:
            text = render_names(items, kind_label(target.info))
            if text:
                out(text.rstrip("\n"))
        return 1 if failures else 0
    now = _now()
    blocks = []
    for target, items in fetched:
        if not items:
            continue
        table = build_table(
            items,
            group=target.info.group,
            kind=target.info.kind,
            now=now,
            wide=opts.output == "wide",
            with_namespace=opts.all_namespaces and target.info.namespaced,
            show_labels=opts.show_labels,
            kind_prefix=kind_label(target.info) if opts.with_kind else None,
        )
        blocks.append(render_table(table).rstrip("\n"))
    out("\n\n".join(blocks))
    return 1 if failures else 0


def _events(
    client: Client,
    info: KindInfo,
    namespace: str | None,
    opts: GetOptions,
    field_selector: str | None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """List, then follow changes forever: re-watch when a stream ends, relist after 410 Gone.

    The first items come as ``("LIST", obj)``; later ones as watch event types.
    """
    listed = client.list(
        info, namespace, label_selector=opts.label_selector, field_selector=field_selector
    )
    for item in listed.get("items") or []:
        yield "LIST", with_type(item, info)
    yield "SYNCED", {}
    version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
    while True:
        got_any = False
        try:
            for event in client.watch(
                info,
                namespace,
                resource_version=version or None,
                label_selector=opts.label_selector,
                field_selector=field_selector,
            ):
                got_any = True
                obj = event["object"]
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    version = str(rv)
                if event["type"] == "BOOKMARK":
                    continue
                yield event["type"], with_type(obj, info)
        except Gone:
            listed = client.list(
                info, namespace, label_selector=opts.label_selector, field_selector=field_selector
            )
            version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
            continue
        if not got_any:
            time.sleep(REWATCH_PAUSE_S)


def run_watch(client: Client, target: Target, opts: GetOptions, out: Echo, err: Echo) -> int:
    """``get -w``: print the current objects, then a row (or document) per change, until interrupted."""
    info = target.info
    if len(target.names) > 1:
        raise BadRequest("watch is only supported on a single resource or a whole collection")
    namespace = None if (opts.all_namespaces or not info.namespaced) else opts.namespace
    field_selector = opts.field_selector
    if target.names:
        by_name = f"metadata.name={target.names[0]}"
        field_selector = f"{field_selector},{by_name}" if field_selector else by_name
    widths: list[int] = []
    header_printed = False
    initial: list[dict[str, Any]] = []

    def emit(objs: list[dict[str, Any]]) -> None:
        nonlocal header_printed
        if not objs:
            return
        if opts.output == "name":
            out(render_names(objs, kind_label(info)).rstrip("\n"))
            return
        if opts.output in ("yaml", "json"):
            for obj in objs:
                out(
                    ("---\n" + to_yaml(obj) if opts.output == "yaml" else to_json(obj)).rstrip("\n")
                )
            return
        table = build_table(
            objs,
            group=info.group,
            kind=info.kind,
            now=_now(),
            wide=opts.output == "wide",
            with_namespace=opts.all_namespaces and info.namespaced,
            show_labels=opts.show_labels,
        )
        out(render_table(table, headers=not header_printed, remembered=widths).rstrip("\n"))
        header_printed = True

    try:
        for kind, obj in _events(client, info, namespace, opts, field_selector):
            if kind == "LIST":
                initial.append(obj)
            elif kind == "SYNCED":
                if not initial and not target.names:
                    err(
                        no_resources_message(
                            opts.namespace,
                            all_namespaces=opts.all_namespaces,
                            namespaced=info.namespaced,
                        )
                    )
                emit(initial)
            else:
                emit([obj])
    except KeyboardInterrupt:
        return 0
    except ApiError:
        raise
    return 0
