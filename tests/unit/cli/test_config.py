"""The client config file: kubeconfig shape, mode 0600 from the start, and precedence."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshwork.cli.config import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERVER,
    ConfigError,
    data_dir,
    parse_client_config,
    read_client_config,
    render_client_config,
    write_client_config,
)
from meshwork.client import Client


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_config_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_client_config(tmp_path / "home", "http://127.0.0.1:7380", "s3cret")
    finally:
        os.umask(old)
    assert path == tmp_path / "home" / "config"
    assert mode(path) == 0o600
    assert mode(tmp_path / "home") == 0o700


def test_rewriting_replaces_a_world_readable_file_with_a_private_one(tmp_path: Path) -> None:
    target = tmp_path / "config"
    target.write_text("old: config\n")
    target.chmod(0o644)
    write_client_config(tmp_path, "http://127.0.0.1:9999", "new-token")
    assert mode(target) == 0o600
    assert read_client_config(tmp_path).token == "new-token"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]  # no temporary file left behind


def test_config_reads_like_a_kubeconfig(tmp_path: Path) -> None:
    write_client_config(tmp_path, "http://127.0.0.1:7380", "tok")
    doc = yaml.safe_load((tmp_path / "config").read_text())
    assert doc["apiVersion"] == "v1"
    assert doc["kind"] == "Config"
    context = next(c for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c for c in doc["clusters"] if c["name"] == context["context"]["cluster"])
    user = next(u for u in doc["users"] if u["name"] == context["context"]["user"])
    assert cluster["cluster"]["server"] == "http://127.0.0.1:7380"
    assert user["user"]["token"] == "tok"


def test_round_trip(tmp_path: Path) -> None:
    write_client_config(tmp_path, "http://10.0.0.1:1234", "abc")
    config = read_client_config(tmp_path)
    assert (config.server, config.token, config.namespace, config.path) == (
        "http://10.0.0.1:1234",
        "abc",
        "default",
        tmp_path / "config",
    )


printable = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, exclude_categories=("Cs",)),
    min_size=1,
    max_size=60,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
@given(server=printable, token=printable)
def test_any_server_and_token_survive_the_yaml(server: str, token: str) -> None:
    config = parse_client_config(yaml.safe_load(render_client_config(server, token)))
    assert (config.server, config.token) == (server, token)


def test_missing_config_means_the_default_server(tmp_path: Path) -> None:
    config = read_client_config(tmp_path / "nowhere")
    assert (config.server, config.token, config.namespace, config.path) == (
        DEFAULT_SERVER,
        None,
        DEFAULT_NAMESPACE,
        None,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clusters: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("current-context: nope\ncontexts: []\n", "current-context 'nope'"),
        (
            "current-context: c\ncontexts: [{name: c, context: {cluster: x}}]\nclusters: []\n",
            "names cluster 'x'",
        ),
        (
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
            "clusters: [{name: k, cluster: {server: 'http://h:1'}}]\nusers: []\n",
            "names user 'u'",
        ),
        ("clusters: 3\n", "must be a list"),
    ],
)
def test_malformed_config_is_an_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "config").write_text(text)
    with pytest.raises(ConfigError) as info:
        read_client_config(tmp_path)
    assert str(tmp_path / "config") in str(info.value)
    assert message in str(info.value)


def test_context_namespace_is_used(tmp_path: Path) -> None:
    (tmp_path / "config").write_text(
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, namespace: prod}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://h:1'}}]\n"
    )
    config = read_client_config(tmp_path)
    assert (config.server, config.token, config.namespace) == ("http://h:1", None, "prod")


def test_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHWORK_HOME", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("MESHWORK_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert data_dir() == tmp_path / "user" / ".meshwork"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_client_config(tmp_path, "http://127.0.0.1:7380", "file-token")
    monkeypatch.delenv("MESHWORK_SERVER", raising=False)
    monkeypatch.delenv("MESHWORK_TOKEN", raising=False)
    client = Client.from_config(tmp_path)
    assert (client.server, client.token) == ("http://127.0.0.1:7380", "file-token")
    monkeypatch.setenv("MESHWORK_SERVER", "http://127.0.0.1:9000")
    monkeypatch.setenv("MESHWORK_TOKEN", "env-token")
    client = Client.from_config(tmp_path)
    assert (client.server, client.token) == ("http://127.0.0.1:9000", "env-token")
