"""functions/authorizer/app.py driven with API Gateway TOKEN authorizer events."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from bulkio import bootstrap
from bulkio.adapters.tokens import mint_token
from bulkio.domain.auth import Principal

from tests.functions import LambdaContext, load_function_app

SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"
API_ARN = "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5"
METHOD_ARN = f"{API_ARN}/prod/POST/v1/imports"


@pytest.fixture(scope="module")
def authorizer() -> ModuleType:
    return load_function_app("authorizer")


@pytest.fixture
def configured(authorizer: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The authorizer with an HS256 secret and nothing else; its cached verifier rebuilt from that."""
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    for variable in ("AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_LEEWAY_SECONDS"):
        monkeypatch.delenv(variable, raising=False)
    bootstrap.reset()
    yield authorizer
    bootstrap.reset()


def token_event(authorization: str | None, method_arn: str = METHOD_ARN) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "TOKEN", "methodArn": method_arn}
    if authorization is not None:
        event["authorizationToken"] = authorization
    return event


def authorize(authorizer: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = authorizer.handler(event, LambdaContext())
    return answer


def refusal(authorizer: ModuleType, event: dict[str, Any]) -> Exception:
    # API Gateway's contract: the authorizer fails with a bare Exception, its message the verdict.
    with pytest.raises(Exception) as caught:
        authorize(authorizer, event)
    return caught.value


def test_valid_token_is_allowed_on_the_whole_stage(configured: ModuleType) -> None:
    token = mint_token(SECRET, "ann", ["imports:write", "imports:read"])

    answer = authorize(configured, token_event(f"Bearer {token}"))

    assert answer["principalId"] == "ann"
    assert answer["policyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{API_ARN}/prod/*/*"}],
    }
    assert answer["context"] == {"subject": "ann", "scopes": "imports:read imports:write"}


def test_context_hands_the_api_the_same_principal(configured: ModuleType) -> None:
    token = mint_token(SECRET, "carol", ["exports:read", "admin"])

    answer = authorize(configured, token_event(f"Bearer {token}"))

    context = {**answer["context"], "principalId": answer["principalId"]}
    assert Principal.from_context(context) == Principal("carol", frozenset({"exports:read", "admin"}))


def test_context_holds_only_strings_as_api_gateway_requires(configured: ModuleType) -> None:
    answer = authorize(configured, token_event(f"Bearer {mint_token(SECRET, 'ann', ['imports:read'])}"))

    assert all(isinstance(value, str) for value in answer["context"].values())
    json.dumps(answer)  # the whole answer is JSON, as Lambda returns it


@pytest.mark.parametrize(
    ("method_arn", "resource"),
    [
        (f"{API_ARN}/prod/GET/v1/imports/abc", f"{API_ARN}/prod/*/*"),
        (f"{API_ARN}/staging/DELETE/v1/exports/x/y", f"{API_ARN}/staging/*/*"),
        (f"{API_ARN}/prod/GET/", f"{API_ARN}/prod/*/*"),
    ],
)
def test_policy_resource_is_derived_from_the_method_arn(configured: ModuleType, method_arn: str, resource: str) -> None:
    answer = authorize(configured, token_event(f"Bearer {mint_token(SECRET, 'ann', [])}", method_arn))

    assert answer["policyDocument"]["Statement"][0]["Resource"] == resource


def test_api_wide_keeps_the_api_and_stage_and_widens_method_and_path(authorizer: ModuleType) -> None:
    assert authorizer.api_wide(f"{API_ARN}/prod/POST/v1/imports/{{job_id}}/cancel") == f"{API_ARN}/prod/*/*"


def test_token_without_scopes_is_still_allowed_in(configured: ModuleType) -> None:
    """Authentication only: the API function checks the scope each route needs."""
    answer = authorize(configured, token_event(f"Bearer {mint_token(SECRET, 'ann', [])}"))

    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert answer["context"] == {"subject": "ann", "scopes": ""}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-jwt",
        f"Bearer {mint_token(SECRET, 'ann', ['admin'], ttl_seconds=60, now=time.time() - 3600)}",
        f"Bearer {mint_token('another-secret-nobody-configured-0123456789', 'ann', ['admin'])}",
    ],
    ids=["absent", "empty", "basic", "bearer-only", "garbage", "expired", "forged"],
)
def test_unusable_token_fails_with_exactly_unauthorized(configured: ModuleType, authorization: str | None) -> None:
    error = refusal(configured, token_event(authorization))

    assert type(error) is Exception
    assert str(error) == "Unauthorized"
    assert error.__cause__ is None
    assert error.__suppress_context__  # raised `from None`: the rejection's details stay in the log


def test_unsigned_token_fails_with_exactly_unauthorized(configured: ModuleType) -> None:
    def b64url_json(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{b64url_json({'alg': 'none'})}.{b64url_json({'sub': 'ann', 'exp': int(time.time()) + 60})}."

    assert str(refusal(configured, token_event(f"Bearer {unsigned}"))) == "Unauthorized"


def test_unconfigured_authorizer_fails_rather_than_refuses(
    authorizer: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("AUTH_JWT_SECRET", "AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE"):
        monkeypatch.delenv(variable, raising=False)
    bootstrap.reset()
    try:
        with pytest.raises(RuntimeError) as raised:
            authorizer.handler(token_event(f"Bearer {mint_token(SECRET, 'ann', ['admin'])}"), LambdaContext())
    finally:
        bootstrap.reset()

    # Any failure but "Unauthorized" is API Gateway's 500 AUTHORIZER_FAILURE: the configuration is at fault.
    assert str(raised.value) != "Unauthorized"
    assert "AUTH_JWT_SECRET" in str(raised.value)


def test_issuer_setting_is_enforced(configured: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_ISSUER", "bulkio-local")
    bootstrap.reset()

    accepted = authorize(configured, token_event(f"Bearer {mint_token(SECRET, 'ann', [], issuer='bulkio-local')}"))
    error = refusal(configured, token_event(f"Bearer {mint_token(SECRET, 'ann', [], issuer='elsewhere')}"))

    assert accepted["principalId"] == "ann"
    assert str(error) == "Unauthorized"


def test_verifier_is_built_once_and_reused(configured: ModuleType) -> None:
    assert bootstrap.token_verifier() is bootstrap.token_verifier()


def test_header_pyjwt_refuses_fails_with_exactly_unauthorized(configured: ModuleType) -> None:
    def b64url_json(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = f"{b64url_json({'alg': 'HS256', 'kid': 5})}.{b64url_json({'sub': 'ann'})}.c2ln"

    assert str(refusal(configured, token_event(f"Bearer {token}"))) == "Unauthorized"


def test_every_check_is_counted_by_outcome(configured: ModuleType) -> None:
    registry = bootstrap.metrics().registry

    def count(outcome: str) -> float:
        return registry.get_sample_value("bulkio_token_checks_total", {"outcome": outcome}) or 0.0

    before = {outcome: count(outcome) for outcome in ("accepted", "expired_token", "missing_token")}
    authorize(configured, token_event(f"Bearer {mint_token(SECRET, 'ann', ['imports:read'])}"))
    refusal(configured, token_event(f"Bearer {mint_token(SECRET, 'ann', ['imports:read'], ttl_seconds=-300)}"))
    refusal(configured, token_event(None))

    assert {outcome: count(outcome) - before[outcome] for outcome in before} == {
        "accepted": 1,
        "expired_token": 1,
        "missing_token": 1,
    }
