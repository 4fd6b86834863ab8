"""Credentials on disk: the admin token, created once with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_FILE = "token"
# 32 random bytes: the same strength as Kubernetes' bootstrap and service account secrets.
TOKEN_BYTES = 32


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only from the first byte."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_or_create_token(data_dir: Path) -> str:
    """The admin token in ``data_dir``, generating it at first start."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(TOKEN_BYTES)
    write_private(path, (token + "\n").encode())
    return token


def default_data_dir() -> Path:
    """``$MESHWORK_HOME`` or ``~/.meshwork``."""
    env = os.environ.get("MESHWORK_HOME")
    return Path(env).expanduser() if env else Path.home() / ".meshwork"


def ensure_data_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
