"""Who may do what: scopes, and who may read a job. Pure: no tokens, no AWS. The scope each route needs is
declared with the route (bulkio.web.api).

A caller is a `Principal`: the token's subject and its scopes. The authorizer (API Gateway) and the streaming
export function turn a bearer token into one; the API checks the route's scope against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    IMPORTS_WRITE = "imports:write"
    IMPORTS_READ = "imports:read"
    EXPORTS_READ = "exports:read"
    ADMIN = "admin"  # every scope, and every caller's jobs


ALL_SCOPES = tuple(scope.value for scope in Scope)


def scopes_from_claims(claims: Mapping[str, Any], prefix: str = "") -> frozenset[str]:
    """OAuth 2 puts scopes in `scope` (space-separated); some issuers use `scp` (a list). With `prefix` (Cognito
    names custom scopes `<resource server>/<scope>`), only scopes carrying exactly that prefix count, so another
    resource server's `admin` grants nothing here."""
    raw: Any = claims.get("scope", claims.get("scp", ""))
    names: Iterable[Any] = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else ()
    texts = (name for name in names if isinstance(name, str) and name.strip())
    if prefix:
        return frozenset(name.removeprefix(prefix) for name in texts if name.startswith(prefix))
    return frozenset(texts)


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN.value in self.scopes

    def has(self, scope: Scope) -> bool:
        return self.is_admin or scope.value in self.scopes

    def may_read(self, owner: str | None) -> bool:
        """Only a job's owner or an admin may see it. Jobs nobody owns (S3 drops) are the admins'."""
        return self.is_admin or (owner is not None and owner == self.subject)

    def to_context(self) -> dict[str, str]:
        """What the authorizer hands API Gateway: flat strings (API Gateway allows no lists in the context)."""
        return {"subject": self.subject, "scopes": " ".join(sorted(self.scopes))}

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> Principal | None:
        """The caller the authorizer let in, from the event's requestContext.authorizer; None if there is none."""
        if not context:
            return None
        subject = context.get("subject") or context.get("principalId")
        if not subject:
            return None
        return cls(str(subject), frozenset(str(context.get("scopes") or "").split()))


def insufficient_scope_message(scope: Scope) -> str:
    return (
        f"this operation needs the {scope.value!r} scope, which the token does not carry: "
        f"ask for a token with {scope.value} (locally: make token SCOPES={scope.value})"
    )
