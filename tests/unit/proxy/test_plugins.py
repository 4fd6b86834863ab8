"""ProxyPlugin loading and hooks (pure apart from loading a real module file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshwork.proxy.plugins import PluginRequest, run_request, selected

HOOKS = """
calls = []
def on_request(request):
    calls.append(request.config.get("name"))
    if request.headers.get("x-deny"):
        return 451, "denied", {"x-why": "policy"}
    request.headers_to_add["x-seen-by"] = request.config.get("name", "")
"""


def _plugin(name: str, module: str, priority: int = 0, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"module": module, "config": {"name": name}, "priority": priority,
                     "selector": {"matchLabels": labels or {}}}}  # fmt: skip


def _request(**headers: str) -> PluginRequest:
    return PluginRequest("GET", "/", "svc:80", headers, {})


def test_selectors_pick_by_labels_and_priority_orders_the_hooks(tmp_path: Path) -> None:
    f = tmp_path / "hooks.py"
    f.write_text(HOOKS)
    chosen = selected([_plugin("low", str(f), 1), _plugin("high", str(f), 9), _plugin("elsewhere", str(f), 5, {"app": "x"})],
                      {"app": "web"})  # fmt: skip
    assert [p.name for p in chosen] == ["ns/high", "ns/low"]
    req = _request()
    assert run_request(chosen, req) is None
    assert req.headers_to_add == {"x-seen-by": "low"}  # both ran, in order; the last one set it


def test_a_hook_answers_and_a_failing_hook_answers_500(tmp_path: Path) -> None:
    f = tmp_path / "hooks.py"
    f.write_text(HOOKS)
    reply = run_request(selected([_plugin("p", str(f))], {}), _request(**{"x-deny": "1"}))
    assert reply is not None and (reply.status, reply.body, reply.headers) == (451, b"denied", ((b"x-why", b"policy"),))
    broken = tmp_path / "broken.py"
    broken.write_text("def on_request(request):\n    raise RuntimeError('boom')\n")
    reply = run_request(selected([_plugin("b", str(broken))], {}), _request())
    assert reply is not None and reply.status == 500 and b"ns/b" in reply.body


def test_a_module_that_cannot_load_is_a_config_error_naming_the_plugin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ProxyPlugin ns/missing"):
        selected([_plugin("missing", str(tmp_path / "nope.py"))], {})
