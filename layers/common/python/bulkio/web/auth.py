"""Request authorisation shared by the API function and the streaming export function: one set of rules, one
set of answers (401 without a usable token, 403 without the route's scope)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bulkio.adapters.tokens import SERVICE_FAULTS, TokenRejected, TokenVerifier
from bulkio.domain.auth import Principal, Scope, insufficient_scope_message
from bulkio.problems import Problem, insufficient_scope, unauthorized

# What API Gateway's UNAUTHORIZED gateway response says (template.yaml): it cannot tell why the authorizer
# refused, so neither can this.
NO_VALID_TOKEN = (
    "send a valid bearer token: Authorization: Bearer <JWT>. The token was missing, malformed, expired or not "
    "signed by a key this service trusts (locally, make token prints one)"
)


def require_scope(principal: Principal, scope: Scope | None) -> None:
    if scope is not None and not principal.has(scope):
        raise insufficient_scope(scope.value, insufficient_scope_message(scope))


def caller_from_authorizer(authorizer_context: Mapping[str, Any] | None) -> Principal:
    """The caller API Gateway's authorizer let through. None means the function was reached without the
    authorizer (a misconfigured route): refuse rather than serve."""
    principal = Principal.from_context(authorizer_context)
    if principal is None:
        raise unauthorized(NO_VALID_TOKEN)
    return principal


def caller_from_header(verifier: TokenVerifier, authorization: str | None) -> Principal:
    """For the function URL, which no authorizer guards: the same check, done here."""
    try:
        return verifier.verify(authorization)
    except TokenRejected as rejected:
        if rejected.reason in SERVICE_FAULTS:
            raise Problem(503, rejected.reason, "Service unavailable", rejected.message) from None
        raise unauthorized(rejected.message, rejected.reason) from None
