"""The local stack's token settings: an HS256 secret kept in the state folder (created on first use, readable
by its owner only), with a fixed issuer and audience. `make run` configures the stack with them and `make token`
signs with them, so a token printed once works until `make reset`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

LOCAL_ISSUER = "bulkio-local"
LOCAL_AUDIENCE = "bulkio"
SECRET_FILE = "jwt-secret"


def local_jwt_secret(state_dir: Path) -> str:
    path = state_dir / SECRET_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: a process starting at the same moment
        # never reads a half-written secret, and the first link wins for everyone.
        draft = state_dir / f".{SECRET_FILE}.{os.getpid()}"
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as secret_file:
            secret_file.write(secrets.token_hex(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


def local_auth_parameters(state_dir: Path) -> dict[str, str]:
    """Template parameter overrides for the embedded stack."""
    return {"AuthJwtSecret": local_jwt_secret(state_dir), "AuthIssuer": LOCAL_ISSUER, "AuthAudience": LOCAL_AUDIENCE}
