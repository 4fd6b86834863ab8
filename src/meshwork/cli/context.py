"""What every command shares: the data dir, the client, and how errors reach the user.

What lives here: the per-invocation ``Session`` (data dir, server and token
overrides, default namespace, a lazily built ``Client``), and ``reports_errors``,
the one place that turns exceptions into a kubectl-style message on stderr, a
hint of what to do next, and exit status 1.

What must not live here: any command's own logic.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from meshwork.cli.config import ConfigError, config_path, data_dir, read_client_config
from meshwork.client import ENV_SERVER, ENV_TOKEN, Client, ServerUnreachable
from meshwork.errors import ApiError, ManifestError, MeshworkError, Unauthenticated

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Session:
    """Options given before the command (``meshwork --data-dir D get pods``)."""

    data_dir: Path
    server: str | None = None
    token: str | None = None
    _client: Client | None = field(default=None, repr=False)
    _namespace: str | None = field(default=None, repr=False)

    def client(self) -> Client:
        """The client for the configured server (flags, then env, then the config file)."""
        if self._client is None:
            config = read_client_config(self.data_dir)
            server = self.server or os.environ.get(ENV_SERVER) or config.server
            token = self.token or os.environ.get(ENV_TOKEN) or config.token
            try:
                self._client = Client(server, token)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            self._namespace = config.namespace
        return self._client

    def namespace(self, explicit: str | None) -> str:
        """``-n`` if given, else the config context's namespace, else ``default``."""
        if explicit:
            return explicit
        if self._namespace is None:
            self._namespace = read_client_config(self.data_dir).namespace
        return self._namespace


def session() -> Session:
    ctx = click.get_current_context()
    obj = ctx.find_object(Session)
    if obj is None:
        obj = Session(data_dir())
        ctx.obj = obj
    return obj


def error(message: str) -> None:
    click.echo(message, err=True)


def hint_for(err: BaseException, sess: Session | None) -> str | None:
    """What to try next, for errors where the fix is not obvious from the message."""
    if isinstance(err, ServerUnreachable):
        return "is it running? start it with `meshwork up -d`"
    if isinstance(err, Unauthenticated):
        where = config_path(sess.data_dir) if sess else "the client config"
        return f"check MESHWORK_TOKEN, or the token in {where} (written by the server at start)"
    return None


def render_error(err: BaseException, sess: Session | None = None) -> list[str]:
    """The lines printed on stderr for ``err``."""
    if isinstance(err, ServerUnreachable):
        return [f"error: cannot reach the meshwork server at {err.server}: {hint_for(err, sess)}"
                f" ({err.cause})"]  # fmt: skip
    if isinstance(err, ManifestError):
        return [cause.render() for cause in err.causes] or [str(err)]
    if isinstance(err, ApiError):
        lines = [f"Error from server ({err.reason}): {err.message}"]
        lines += [
            f"  * {c.field}: {c.message}" if c.field else f"  * {c.message}"
            for c in err.causes
            if c.message and c.message not in err.message
        ]
        hint = hint_for(err, sess)
        if hint:
            lines.append(f"hint: {hint}")
        return lines
    return [f"error: {err}"]


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a command; print any meshwork error kubectl-style and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # The reader went away (`meshwork get pods | head`): stop quietly, as kubectl does.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise SystemExit(1) from None
        except (MeshworkError, OSError) as err:
            ctx = click.get_current_context(silent=True)
            sess = ctx.find_object(Session) if ctx else None
            if isinstance(err, OSError) and not isinstance(err, MeshworkError):
                error(
                    f"error: {err.strerror or err}: {err.filename}"
                    if err.filename
                    else f"error: {err}"
                )
            else:
                for line in render_error(err, sess):
                    error(line)
            raise SystemExit(1) from None

    return wrapper
