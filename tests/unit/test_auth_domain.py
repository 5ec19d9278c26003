"""Who may do what (bulkio.domain.auth), the 401/403 answers built from it (bulkio.web.auth), and the scopes the
routes declare (bulkio.web.api) checked against the routes template.yaml really declares."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bulkio.adapters.tokens import AuthSettings, TokenVerifier, mint_token
from bulkio.domain.auth import ALL_SCOPES, Principal, Scope, insufficient_scope_message, scopes_from_claims
from bulkio.problems import Problem
from bulkio.web.api import ROUTE_SCOPES, required_scope
from bulkio.web.auth import NO_VALID_TOKEN, caller_from_authorizer, caller_from_header, require_scope

from infra.local.template import load_template
from infra.local.template_model import StackTemplate

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"
STREAMED_EXPORT_ROUTE = ("GET", "/v1/exports")

# ---------------------------------------------------------------- scopes from claims


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({"scope": "imports:read imports:write"}, {"imports:read", "imports:write"}),
        ({"scope": "  imports:read   exports:read  "}, {"imports:read", "exports:read"}),
        ({"scope": ""}, set()),
        ({"scp": ["imports:read", "exports:read"]}, {"imports:read", "exports:read"}),
        ({"scp": "imports:read admin"}, {"imports:read", "admin"}),
        ({}, set()),
    ],
)
def test_scopes_from_claims_reads_the_usual_shapes(claims: dict[str, Any], scopes: set[str]) -> None:
    assert scopes_from_claims(claims) == frozenset(scopes)


def test_scope_claim_wins_over_scp() -> None:
    assert scopes_from_claims({"scope": "imports:read", "scp": ["admin"]}) == frozenset({"imports:read"})


@pytest.mark.parametrize(
    "junk",
    [None, 42, 3.5, True, {"admin": True}, ("admin",), {"admin"}],
    ids=["none", "int", "float", "bool", "dict", "tuple", "set"],
)
def test_scopes_of_an_unexpected_type_grant_nothing(junk: Any) -> None:
    assert scopes_from_claims({"scope": junk}) == frozenset()
    assert scopes_from_claims({"scp": junk}) == frozenset()


def test_scp_list_entries_that_are_not_names_are_dropped() -> None:
    assert scopes_from_claims({"scp": ["imports:read", "", "   ", 7]}) == frozenset({"imports:read"})


def test_with_a_prefix_only_that_resource_servers_scopes_count() -> None:
    claims = {"scope": "bulkio/imports:write other-api/admin admin"}
    assert scopes_from_claims(claims, "bulkio/") == frozenset({"imports:write"})
    assert scopes_from_claims(claims) == frozenset({"bulkio/imports:write", "other-api/admin", "admin"})


def test_scopes_from_claims_returns_a_frozenset() -> None:
    assert isinstance(scopes_from_claims({"scope": "imports:read"}), frozenset)


# ---------------------------------------------------------------- the principal


def test_scope_values_are_the_documented_names() -> None:
    assert ALL_SCOPES == ("imports:write", "imports:read", "exports:read", "admin")


def test_principal_has_only_the_scopes_it_carries() -> None:
    reader = Principal("ann", frozenset({"imports:read"}))

    assert reader.has(Scope.IMPORTS_READ)
    assert not reader.has(Scope.IMPORTS_WRITE)
    assert not reader.has(Scope.EXPORTS_READ)
    assert not reader.has(Scope.ADMIN)
    assert not reader.is_admin


def test_admin_implies_every_scope() -> None:
    admin = Principal("root", frozenset({"admin"}))

    assert admin.is_admin
    assert all(admin.has(scope) for scope in Scope)


def test_principal_without_scopes_has_none() -> None:
    nobody = Principal("ann", frozenset())

    assert not any(nobody.has(scope) for scope in Scope)


def test_scope_names_match_exactly() -> None:
    almost = Principal("ann", frozenset({"imports", "IMPORTS:READ", "imports:read:extra", "administrator"}))

    assert not any(almost.has(scope) for scope in Scope)


def test_owner_may_read_their_job() -> None:
    assert Principal("ann", frozenset({"imports:read"})).may_read("ann")


def test_others_may_not_read_a_job() -> None:
    assert not Principal("bob", frozenset({"imports:read", "imports:write"})).may_read("ann")


def test_admin_may_read_anyone_s_job() -> None:
    assert Principal("root", frozenset({"admin"})).may_read("ann")


def test_unowned_jobs_are_for_admins_only() -> None:
    assert not Principal("ann", frozenset({"imports:read"})).may_read(None)
    assert Principal("root", frozenset({"admin"})).may_read(None)


def test_empty_subject_does_not_own_unowned_jobs() -> None:
    assert not Principal("", frozenset({"imports:read"})).may_read(None)


def test_to_context_is_flat_strings_with_sorted_scopes() -> None:
    context = Principal("ann", frozenset({"imports:write", "exports:read", "imports:read"})).to_context()

    assert context == {"subject": "ann", "scopes": "exports:read imports:read imports:write"}
    assert all(isinstance(value, str) for value in context.values())


@pytest.mark.parametrize(
    "principal",
    [
        Principal("ann", frozenset({"imports:read", "imports:write"})),
        Principal("root", frozenset({"admin"})),
        Principal("no-scopes", frozenset()),
        Principal("user|with:odd/chars", frozenset({"exports:read"})),
    ],
)
def test_context_round_trips(principal: Principal) -> None:
    assert Principal.from_context(principal.to_context()) == principal


def test_context_as_api_gateway_hands_it_over_round_trips() -> None:
    """API Gateway adds principalId (and integrationLatency) to the context the authorizer returned."""
    principal = Principal("ann", frozenset({"imports:read"}))
    authorizer = {**principal.to_context(), "principalId": "ann", "integrationLatency": 12}

    assert Principal.from_context(authorizer) == principal


def test_context_falls_back_to_principal_id_without_a_subject() -> None:
    assert Principal.from_context({"principalId": "ann", "scopes": "imports:read"}) == Principal(
        "ann", frozenset({"imports:read"})
    )


def test_context_without_scopes_gives_no_scopes() -> None:
    assert Principal.from_context({"subject": "ann"}) == Principal("ann", frozenset())
    assert Principal.from_context({"subject": "ann", "scopes": None}) == Principal("ann", frozenset())


@pytest.mark.parametrize(
    "context",
    [None, {}, {"scopes": "admin"}, {"subject": "", "scopes": "admin"}, {"principalId": None, "scopes": "admin"}],
    ids=["none", "empty", "no-subject", "empty-subject", "null-principal"],
)
def test_context_without_a_caller_is_none(context: dict[str, Any] | None) -> None:
    assert Principal.from_context(context) is None


# ---------------------------------------------------------------- route scopes


@pytest.mark.parametrize(
    ("method", "route", "scope"),
    [
        ("GET", "/v1/health", None),
        ("POST", "/v1/imports", Scope.IMPORTS_WRITE),
        ("GET", "/v1/imports", Scope.IMPORTS_READ),
        ("GET", "/v1/imports/{job_id}", Scope.IMPORTS_READ),
        ("GET", "/v1/imports/{job_id}/errors", Scope.IMPORTS_READ),
        ("POST", "/v1/imports/{job_id}/cancel", Scope.IMPORTS_WRITE),
        ("POST", "/v1/exports", Scope.EXPORTS_READ),
        ("GET", "/v1/exports/{job_id}", Scope.EXPORTS_READ),
        ("GET", "/v1/exports", Scope.EXPORTS_READ),
    ],
)
def test_required_scope_of_known_routes(method: str, route: str, scope: Scope | None) -> None:
    assert required_scope(method, route) is scope


def test_required_scope_ignores_the_method_case() -> None:
    assert required_scope("post", "/v1/imports") is Scope.IMPORTS_WRITE
    assert required_scope("get", "/v1/health") is None


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("DELETE", "/v1/imports/{job_id}"),
        ("PUT", "/v1/imports"),
        ("GET", "/v1/admin"),
        ("GET", "/v1/imports/123"),  # a concrete path is not a route template
        ("GET", "/v1/health/"),
        ("POST", "/v1/health"),
        ("GET", ""),
    ],
)
def test_unknown_routes_are_for_admins_only(method: str, route: str) -> None:
    assert required_scope(method, route) is Scope.ADMIN


def test_insufficient_scope_message_names_the_scope_and_how_to_get_it() -> None:
    message = insufficient_scope_message(Scope.EXPORTS_READ)

    assert "'exports:read'" in message
    assert "make token SCOPES=exports:read" in message


# ---------------------------------------------------------------- 403 without the scope


def test_require_scope_passes_with_the_scope() -> None:
    require_scope(Principal("ann", frozenset({"imports:write"})), Scope.IMPORTS_WRITE)


def test_require_scope_passes_for_admins() -> None:
    require_scope(Principal("root", frozenset({"admin"})), Scope.IMPORTS_WRITE)


def test_require_scope_passes_open_routes_for_anyone() -> None:
    require_scope(Principal("ann", frozenset()), None)


def test_require_scope_without_the_scope_is_a_403_naming_it() -> None:
    with pytest.raises(Problem) as caught:
        require_scope(Principal("ann", frozenset({"imports:read"})), Scope.IMPORTS_WRITE)

    problem = caught.value
    assert problem.status == 403
    assert problem.code == "insufficient_scope"
    assert problem.extra == {"required_scope": "imports:write"}
    assert problem.detail == insufficient_scope_message(Scope.IMPORTS_WRITE)
    assert problem.headers["WWW-Authenticate"] == (
        'Bearer realm="bulkio", error="insufficient_scope", scope="imports:write"'
    )
    body = problem.to_dict("/v1/imports")
    assert body["status"] == 403
    assert body["code"] == "insufficient_scope"
    assert body["required_scope"] == "imports:write"


def test_require_admin_scope_refuses_everyone_else() -> None:
    everything_but_admin = Principal("ann", frozenset(ALL_SCOPES) - {"admin"})

    with pytest.raises(Problem) as caught:
        require_scope(everything_but_admin, Scope.ADMIN)

    assert caught.value.status == 403
    assert 'scope="admin"' in caught.value.headers["WWW-Authenticate"]


# ---------------------------------------------------------------- 401 without a usable token


def header_verifier() -> TokenVerifier:
    return TokenVerifier(AuthSettings(jwt_secret=SECRET))


def unauthorized_problem(verifier: TokenVerifier, authorization: str | None) -> Problem:
    with pytest.raises(Problem) as caught:
        caller_from_header(verifier, authorization)
    return caught.value


def test_caller_from_header_gives_the_token_s_principal() -> None:
    token = mint_token(SECRET, "ann", ["exports:read"])

    assert caller_from_header(header_verifier(), f"Bearer {token}") == Principal("ann", frozenset({"exports:read"}))


@pytest.mark.parametrize("authorization", [None, "", "  "])
def test_caller_from_header_missing_token_is_a_plain_bearer_challenge(authorization: str | None) -> None:
    problem = unauthorized_problem(header_verifier(), authorization)

    assert problem.status == 401
    assert problem.code == "unauthorized"
    assert problem.extra == {"reason": "missing_token"}
    assert problem.headers == {"WWW-Authenticate": 'Bearer realm="bulkio"'}


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "malformed_token"),
        ("Bearer", "malformed_token"),
        ("Bearer garbage", "malformed_token"),
        (f"Bearer {mint_token(SECRET, 'ann', [], ttl_seconds=60, now=time.time() - 3600)}", "expired_token"),
        (f"Bearer {mint_token('another-secret-nobody-configured-0123456789', 'ann', [])}", "invalid_signature"),
    ],
)
def test_caller_from_header_rejected_token_is_401_invalid_token(authorization: str, reason: str) -> None:
    problem = unauthorized_problem(header_verifier(), authorization)

    assert problem.status == 401
    assert problem.code == "unauthorized"
    assert problem.extra == {"reason": reason}
    assert problem.headers == {"WWW-Authenticate": 'Bearer realm="bulkio", error="invalid_token"'}
    assert problem.to_dict()["reason"] == reason


def test_caller_from_header_without_configuration_is_503_auth_not_configured() -> None:
    with pytest.raises(Problem) as raised:
        caller_from_header(TokenVerifier(AuthSettings()), f"Bearer {mint_token(SECRET, 'ann', ['admin'])}")

    # The service's fault, not the caller's: no 401 that would send them after a new token.
    assert (raised.value.status, raised.value.code) == (503, "auth_not_configured")


def test_caller_from_header_problem_does_not_echo_the_token() -> None:
    token = mint_token("another-secret-nobody-configured-0123456789", "ann", ["admin"])

    problem = unauthorized_problem(header_verifier(), f"Bearer {token}")

    assert token not in str(problem.to_dict())
    assert problem.__cause__ is None  # raised `from None`: the PyJWT chain stays out of tracebacks


def test_caller_from_authorizer_gives_the_authorizer_s_principal() -> None:
    context = {"principalId": "ann", "subject": "ann", "scopes": "imports:read"}

    assert caller_from_authorizer(context) == Principal("ann", frozenset({"imports:read"}))


@pytest.mark.parametrize("context", [None, {}, {"scopes": "admin"}], ids=["none", "empty", "no-subject"])
def test_caller_from_authorizer_without_a_caller_is_401(context: dict[str, Any] | None) -> None:
    with pytest.raises(Problem) as caught:
        caller_from_authorizer(context)

    problem = caught.value
    assert problem.status == 401
    assert problem.code == "unauthorized"
    assert problem.detail == NO_VALID_TOKEN
    assert problem.headers == {"WWW-Authenticate": 'Bearer realm="bulkio"'}
    assert "reason" not in problem.extra


# ---------------------------------------------------------------- ROUTE_SCOPES against template.yaml


@pytest.fixture(scope="module")
def stack() -> StackTemplate:
    return load_template(TEMPLATE, parameter_overrides={"DatabaseUrl": ""})


def template_api_events(stack: StackTemplate) -> dict[tuple[str, str], str | None]:
    """(method, path) -> the authorizer guarding it (None: open), over every function's Api events."""
    return {
        (event.method, event.path): event.authorizer
        for function in stack.functions.values()
        for event in function.api_events
    }


def test_template_declares_api_events(stack: StackTemplate) -> None:
    assert len(template_api_events(stack)) >= 8


def test_every_template_api_event_has_a_route_scope(stack: StackTemplate) -> None:
    missing = sorted(set(template_api_events(stack)) - set(ROUTE_SCOPES))

    assert missing == []


def test_every_authorized_template_event_needs_a_scope(stack: StackTemplate) -> None:
    guarded_but_unscoped = sorted(
        route
        for route, authorizer in template_api_events(stack).items()
        if authorizer is not None and ROUTE_SCOPES.get(route) is None
    )

    assert guarded_but_unscoped == []


def test_every_open_template_event_is_an_open_route(stack: StackTemplate) -> None:
    scoped_but_unguarded = sorted(
        route
        for route, authorizer in template_api_events(stack).items()
        if authorizer is None and ROUTE_SCOPES.get(route, Scope.ADMIN) is not None
    )

    assert scoped_but_unguarded == []


def test_open_routes_are_exactly_the_template_events_without_an_authorizer(stack: StackTemplate) -> None:
    open_routes = {route for route, scope in ROUTE_SCOPES.items() if scope is None}
    unguarded_events = {route for route, authorizer in template_api_events(stack).items() if authorizer is None}

    assert open_routes == unguarded_events


def test_every_scoped_route_is_a_template_api_event_but_the_streamed_export(stack: StackTemplate) -> None:
    events = template_api_events(stack)
    scoped_routes = {route for route, scope in ROUTE_SCOPES.items() if scope is not None}

    assert sorted(scoped_routes - set(events)) == [STREAMED_EXPORT_ROUTE]


def test_streamed_export_route_is_the_export_stream_function_url(stack: StackTemplate) -> None:
    export_stream = stack.functions["ExportStreamFunction"]

    assert export_stream.url is not None
    assert export_stream.url.path == STREAMED_EXPORT_ROUTE[1]
    assert export_stream.url.auth_type == "NONE"  # no authorizer: the function checks the token itself
    assert export_stream.api_events == []
    assert STREAMED_EXPORT_ROUTE not in template_api_events(stack)


def test_guarded_template_events_name_the_api_s_authorizer(stack: StackTemplate) -> None:
    authorizers = {authorizer for authorizer in template_api_events(stack).values() if authorizer is not None}

    assert authorizers
    assert authorizers <= set(stack.api_authorizers)
