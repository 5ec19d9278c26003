"""Print a bearer token the embedded local stack accepts.

    python -m infra.tools.token [--scopes "imports:write imports:read exports:read"] [--subject local-user]
                                [--ttl 3600] [--state-dir .state]

`make token` runs this; `make token SCOPES=admin SUBJECT=ops` picks other scopes or another caller. Scopes:
imports:write, imports:read, exports:read, admin. The token is signed with the stack's secret in the state
folder (created if need be), so it works until `make reset`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from infra.local.auth import LOCAL_AUDIENCE, LOCAL_ISSUER, local_jwt_secret
from infra.local.stack import REPOSITORY_ROOT

# The functions' layer signs and checks tokens: the same code here.
sys.path.insert(0, str(REPOSITORY_ROOT / "layers/common/python"))
from bulkio.adapters.tokens import mint_token
from bulkio.domain.auth import ALL_SCOPES, Scope

DEFAULT_SCOPES = (Scope.IMPORTS_WRITE.value, Scope.IMPORTS_READ.value, Scope.EXPORTS_READ.value)


def local_token(
    state_dir: Path, scopes: Iterable[str] = DEFAULT_SCOPES, subject: str = "local-user", ttl_seconds: int = 3600
) -> str:
    """A token the embedded stack whose state is in `state_dir` accepts."""
    secret = local_jwt_secret(state_dir)
    return mint_token(secret, subject, scopes, ttl_seconds=ttl_seconds, issuer=LOCAL_ISSUER, audience=LOCAL_AUDIENCE)


def parse_scopes(text: str) -> list[str]:
    scopes = [scope for scope in text.replace(",", " ").split() if scope]
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}: choose from {', '.join(ALL_SCOPES)}")
    return scopes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scopes", default=" ".join(DEFAULT_SCOPES), help="space- or comma-separated")
    parser.add_argument("--subject", default="local-user", help="the caller's id: the owner of the jobs it makes")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("LOCAL_STATE_DIR", REPOSITORY_ROOT / ".state"))
    )
    arguments = parser.parse_args(argv)
    try:
        scopes = parse_scopes(arguments.scopes)
    except ValueError as error:
        parser.error(str(error))
    print(local_token(arguments.state_dir, scopes, arguments.subject, arguments.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
