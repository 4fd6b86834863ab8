"""The image catalogue (``meshwork.agent.images``): names, the user's file, reloads, errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from meshwork.agent.images import CATALOGUE_FILE, REASON_NOT_FOUND, Catalogue, ImageEntry


def write(data_dir: Path, text: str) -> None:
    (data_dir / CATALOGUE_FILE).write_text(text)


@pytest.mark.parametrize("image", [
    "busybox", "busybox:1.36", "docker.io/busybox", "docker.io/library/busybox:latest",
    "library/busybox", "busybox@sha256:" + "0" * 64,
])  # fmt: skip
def test_builtin_names_match_with_or_without_tag_and_docker_io_prefixes(image: str) -> None:
    entry = Catalogue(None).lookup(image)
    assert entry == ImageEntry(("/bin/sh",))


def test_python_runs_this_interpreter_and_pause_sleeps() -> None:
    cat = Catalogue(None)
    assert cat.lookup("python:3.11-slim") == ImageEntry((sys.executable,))
    assert cat.lookup("registry.k8s.io/pause:3.9") == ImageEntry(("sleep", "infinity"))


@pytest.mark.parametrize(
    "image", ["nginx", "myorg/busybox", "ghcr.io/busybox", "quay.io/library/busybox"]
)
def test_other_names_are_not_found(image: str) -> None:
    assert Catalogue(None).lookup(image) is None


def test_a_user_entry_matches_its_tag_and_prefixes_and_carries_args_dir_and_env(
    tmp_path: Path,
) -> None:
    write(tmp_path, "myorg/api:1.4:\n  command: [python3, -m, api]\n  args: [--port, 8080]\n"
                    "  workingDir: /srv/api\n  env: {MODE: local, LEVEL: 3}\n")  # fmt: skip
    cat = Catalogue(tmp_path)
    want = ImageEntry(
        ("python3", "-m", "api"),
        ("--port", "8080"),
        "/srv/api",
        (("MODE", "local"), ("LEVEL", "3")),
    )
    assert cat.lookup("myorg/api:1.4") == want
    assert cat.lookup("docker.io/myorg/api:1.4") == want
    assert cat.lookup("myorg/api:2.0") is None  # a tagged entry is that tag only
    assert cat.lookup("myorg/api") is None


def test_an_untagged_user_entry_matches_every_tag_and_a_tagged_one_wins(tmp_path: Path) -> None:
    write(tmp_path, "myorg/api:\n  command: [any]\nmyorg/api:2.0:\n  command: [two]\n"
                    "localhost:5000/tool:\n  command: [tool]\n")  # fmt: skip
    cat = Catalogue(tmp_path)
    assert cat.lookup("myorg/api:1.0") == ImageEntry(("any",))
    assert cat.lookup("myorg/api:2.0") == ImageEntry(("two",))
    # A registry port is not a tag.
    assert cat.lookup("localhost:5000/tool:7") == ImageEntry(("tool",))
    assert cat.lookup("localhost:5000/tool") == ImageEntry(("tool",))


def test_the_users_file_overrides_the_builtins(tmp_path: Path) -> None:
    write(tmp_path, "busybox:\n  command: [my-busybox]\npython:3.12:\n  command: [python3.12]\n")
    cat = Catalogue(tmp_path)
    assert cat.lookup("docker.io/library/busybox:1.36") == ImageEntry(("my-busybox",))
    assert cat.lookup("python:3.12") == ImageEntry(("python3.12",))
    assert cat.lookup("python:3.11") == ImageEntry(
        (sys.executable,)
    )  # the built-in still serves other tags


def test_the_file_is_reloaded_when_it_changes_appears_or_goes(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path)
    assert cat.lookup("myorg/tool") is None
    write(tmp_path, "myorg/tool:\n  command: [v1]\n")
    assert cat.lookup("myorg/tool") == ImageEntry(("v1",))
    write(tmp_path, "myorg/tool:\n  command: [v2]\n")  # same size, written at once
    assert cat.lookup("myorg/tool") == ImageEntry(("v2",))
    # An editor's write-then-rename, even with the old file's mtime, is a change.
    new = tmp_path / "images.yaml.new"
    new.write_text("myorg/tool:\n  command: [v3]\n")
    st = (tmp_path / CATALOGUE_FILE).stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, tmp_path / CATALOGUE_FILE)
    assert cat.lookup("myorg/tool") == ImageEntry(("v3",))
    (tmp_path / CATALOGUE_FILE).unlink()
    assert cat.lookup("myorg/tool") is None


def test_the_missing_message_says_how_to_add_the_image(tmp_path: Path) -> None:
    msg = Catalogue(tmp_path).missing_message("myorg/api:1.4")
    assert '"myorg/api:1.4"' in msg
    assert str(tmp_path / CATALOGUE_FILE) in msg
    assert "command" in msg
    assert REASON_NOT_FOUND == "ErrImageNeverPull"


@pytest.mark.parametrize(("text", "fragment"), [
    ("myorg/api: [\n", "images.yaml"),  # not YAML
    ("- a\n- b\n", "expected a mapping of image name to entry"),
    ("myorg/api:\n  args: [x]\n", "myorg/api: give a non-empty `command` list"),
    ("myorg/api:\n  command: []\n", "myorg/api: give a non-empty `command` list"),
    ("myorg/api: just-a-string\n", "myorg/api: give a non-empty `command` list"),
])  # fmt: skip
def test_a_broken_file_is_reported_in_the_message_and_keeps_the_last_good_entries(
    tmp_path: Path, text: str, fragment: str
) -> None:
    cat = Catalogue(tmp_path)
    write(tmp_path, "myorg/good:\n  command: [good]\n")
    assert cat.lookup("myorg/good") == ImageEntry(("good",))
    write(tmp_path, text)
    assert cat.lookup("myorg/good") == ImageEntry(("good",))
    assert cat.lookup("busybox") == ImageEntry(("/bin/sh",))
    msg = cat.missing_message("myorg/api")
    assert "the catalogue file has an error" in msg and fragment in msg, msg
    # Fixed again: the error goes away.
    write(tmp_path, "myorg/api:\n  command: [api]\n")
    assert cat.lookup("myorg/api") == ImageEntry(("api",))
    assert "error" not in cat.missing_message("other/image")
