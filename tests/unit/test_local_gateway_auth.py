"""The local functions host's emulation of API Gateway's Lambda authorizer handling: IAM policy evaluation,
the verdict drawn from the authorizer's answer, and the gateway responses (template.yaml's) it answers with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.local.gateway_auth import (
    DEFAULT_GATEWAY_RESPONSES,
    AuthorizerVerdict,
    authorizer_verdict,
    method_arn,
    policy_allows,
    render_gateway_response,
)
from infra.local.template import load_template
from infra.local.template_model import GatewayResponse, StackTemplate
from infra.local.workers import Outcome

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
API = "arn:aws:execute-api:us-east-1:123456789012:local"
ARN = f"{API}/prod/GET/v1/imports/abc"
REQUEST_CONTEXT = {"path": "/prod/v1/imports/abc", "requestId": "0b4f7e8a-request"}


def statement(effect: str, resource: Any, action: Any = "execute-api:Invoke") -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource}


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def succeeded(answer: Any) -> Outcome:
    return Outcome(failed=False, payload=json.dumps(answer).encode())


def failed(message: str, error_type: str = "Exception") -> Outcome:
    error = {"errorMessage": message, "errorType": error_type, "stackTrace": []}
    return Outcome(failed=True, payload=json.dumps(error).encode())


def allow_answer(principal_id: str = "ann", context: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "principalId": principal_id,
        "policyDocument": policy(statement("Allow", f"{API}/prod/*/*")),
    }
    if context is not None:
        answer["context"] = context
    return answer


# ---------------------------------------------------------------- policy evaluation


@pytest.mark.parametrize(
    "resource",
    [
        ARN,
        f"{API}/prod/*/*",
        f"{API}/prod/GET/*",
        f"{API}/*",
        "*",
        f"{API}/prod/GET/v1/imports/???",
        f"{API}/prod/*/v1/imports/*",
    ],
)
def test_matching_allow_allows(resource: str) -> None:
    assert policy_allows(policy(statement("Allow", resource)), ARN)


@pytest.mark.parametrize(
    "resource",
    [
        f"{API}/prod/POST/*",
        f"{API}/staging/*/*",
        "arn:aws:execute-api:us-east-1:123456789012:another/prod/*/*",
        f"{API}/prod/GET/v1/exports/*",
        f"{API}/prod/GET/v1/imports/??",
        f"{API}/prod/get/v1/imports/abc",
    ],
)
def test_allow_for_other_resources_does_not_allow(resource: str) -> None:
    assert not policy_allows(policy(statement("Allow", resource)), ARN)


def test_explicit_deny_wins_over_allow_whatever_the_order() -> None:
    allow = statement("Allow", f"{API}/prod/*/*")
    deny = statement("Deny", f"{API}/prod/GET/v1/imports/*")

    assert not policy_allows(policy(allow, deny), ARN)
    assert not policy_allows(policy(deny, allow), ARN)


def test_deny_of_another_resource_leaves_the_allow() -> None:
    allow = statement("Allow", f"{API}/prod/*/*")
    deny = statement("Deny", f"{API}/prod/POST/*")

    assert policy_allows(policy(deny, allow), ARN)


def test_no_matching_statement_is_not_allowed() -> None:
    assert not policy_allows(policy(), ARN)
    assert not policy_allows(policy(statement("Deny", f"{API}/prod/POST/*")), ARN)


@pytest.mark.parametrize("not_a_policy", [None, "Allow", [], ["Allow"], {"Version": "2012-10-17"}, {"Statement": []}])
def test_something_that_is_not_a_policy_allows_nothing(not_a_policy: Any) -> None:
    assert not policy_allows(not_a_policy, ARN)


@pytest.mark.parametrize("statements", [5, "Allow", ["Allow"], [None]], ids=["number", "string", "strings", "nulls"])
def test_statements_that_are_not_objects_allow_nothing(statements: Any) -> None:
    assert not policy_allows({"Version": "2012-10-17", "Statement": statements}, ARN)


@pytest.mark.parametrize("action", ["execute-api:*", "*", "execute-api:Inv*", ["s3:GetObject", "execute-api:Invoke"]])
def test_action_wildcards_and_lists_cover_invoke(action: Any) -> None:
    assert policy_allows(policy(statement("Allow", ARN, action)), ARN)


@pytest.mark.parametrize("action", ["execute-api:ManageConnections", "s3:*", [], ["lambda:InvokeFunction"]])
def test_other_actions_do_not_allow(action: Any) -> None:
    assert not policy_allows(policy(statement("Allow", ARN, action)), ARN)


def test_deny_of_other_actions_does_not_deny_invoke() -> None:
    allow = statement("Allow", ARN)
    deny_other_action = statement("Deny", "*", "execute-api:ManageConnections")

    assert policy_allows(policy(allow, deny_other_action), ARN)


def test_resource_may_be_a_string_or_a_list() -> None:
    as_string = statement("Allow", f"{API}/prod/*/*")
    as_list = statement("Allow", [f"{API}/prod/POST/*", f"{API}/prod/GET/*"])
    as_list_missing = statement("Allow", [f"{API}/prod/POST/*", f"{API}/prod/PUT/*"])

    assert policy_allows(policy(as_string), ARN)
    assert policy_allows(policy(as_list), ARN)
    assert not policy_allows(policy(as_list_missing), ARN)


def test_a_single_statement_object_is_evaluated_like_a_list_of_one() -> None:
    assert policy_allows({"Version": "2012-10-17", "Statement": statement("Allow", ARN)}, ARN)
    assert not policy_allows({"Version": "2012-10-17", "Statement": statement("Deny", ARN)}, ARN)


@pytest.mark.parametrize("effect", ["allow", "ALLOW", "Permit", None])
def test_only_the_effect_allow_allows(effect: Any) -> None:
    assert not policy_allows(policy(statement(effect, ARN)), ARN)


def test_method_arn_names_the_local_api_stage_method_and_path() -> None:
    assert method_arn("prod", "GET", "/v1/imports/abc") == ARN


def test_the_authorizer_s_stage_wide_policy_allows_every_route_of_the_stage() -> None:
    stage_wide = policy(statement("Allow", f"{API}/prod/*/*"))

    for method, path in [("POST", "/v1/imports"), ("GET", "/v1/imports/a/errors"), ("GET", "/v1/exports/b")]:
        assert policy_allows(stage_wide, method_arn("prod", method, path))
    assert not policy_allows(stage_wide, method_arn("test", "GET", "/v1/imports"))


# ---------------------------------------------------------------- the verdict


def test_authorizer_failing_with_unauthorized_is_the_unauthorized_response() -> None:
    assert authorizer_verdict(failed("Unauthorized"), ARN) == AuthorizerVerdict(refusal="UNAUTHORIZED")


@pytest.mark.parametrize(
    "outcome",
    [
        failed("unauthorized"),
        failed("Unauthorized "),
        failed("Unauthorized: expired"),
        failed("Key ID header parameter must be a string", "InvalidTokenError"),
        failed("Task timed out after 10.00 seconds", "Sandbox.Timedout"),
        Outcome(failed=True, payload=b""),
        Outcome(failed=True, payload=b'"Unauthorized"'),
    ],
    ids=["lowercase", "trailing-space", "with-detail", "crash", "timeout", "empty", "bare-string"],
)
def test_any_other_authorizer_failure_is_authorizer_failure(outcome: Outcome) -> None:
    assert authorizer_verdict(outcome, ARN) == AuthorizerVerdict(refusal="AUTHORIZER_FAILURE")


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "Allow",
        [],
        {},
        {"principalId": "ann"},
        {"policyDocument": policy(statement("Allow", ARN))},
    ],
    ids=["null", "string", "list", "empty", "no-policy", "no-principal"],
)
def test_answer_without_principal_and_policy_is_authorizer_failure(answer: Any) -> None:
    assert authorizer_verdict(succeeded(answer), ARN) == AuthorizerVerdict(refusal="AUTHORIZER_FAILURE")


def test_answer_with_a_malformed_policy_is_authorizer_failure() -> None:
    answer = {"principalId": "ann", "policyDocument": {"Version": "2012-10-17", "Statement": ["Allow"]}}

    assert authorizer_verdict(succeeded(answer), ARN) == AuthorizerVerdict(refusal="AUTHORIZER_FAILURE")


def test_policy_that_does_not_allow_the_method_is_access_denied() -> None:
    denied = {"principalId": "ann", "policyDocument": policy(statement("Deny", f"{API}/prod/*/*"))}
    elsewhere = {"principalId": "ann", "policyDocument": policy(statement("Allow", f"{API}/prod/POST/*"))}

    assert authorizer_verdict(succeeded(denied), ARN) == AuthorizerVerdict(refusal="ACCESS_DENIED")
    assert authorizer_verdict(succeeded(elsewhere), ARN) == AuthorizerVerdict(refusal="ACCESS_DENIED")


def test_allow_gives_the_context_with_the_principal_id_merged() -> None:
    answer = allow_answer("ann", {"subject": "ann", "scopes": "imports:read"})

    verdict = authorizer_verdict(succeeded(answer), ARN)

    assert verdict.refusal is None
    assert verdict.context == {"subject": "ann", "scopes": "imports:read", "principalId": "ann"}


def test_allow_without_a_context_gives_the_principal_id_alone() -> None:
    assert authorizer_verdict(succeeded(allow_answer("ann")), ARN) == AuthorizerVerdict(context={"principalId": "ann"})
    assert authorizer_verdict(succeeded(allow_answer("ann", {})), ARN).context == {"principalId": "ann"}


def test_principal_id_overrides_a_context_key_of_the_same_name() -> None:
    answer = allow_answer("ann", {"principalId": "mallory", "subject": "ann"})

    assert authorizer_verdict(succeeded(answer), ARN).context == {"principalId": "ann", "subject": "ann"}


# ---------------------------------------------------------------- gateway responses


def test_render_substitutes_context_variables() -> None:
    response = GatewayResponse(
        418,
        {"Content-Type": "application/json", "X-Extra": "yes"},
        {"application/json": '{"at": "$context.path", "id": "$context.requestId", "other": "$context.stage"}'},
    )

    status, headers, body = render_gateway_response(response, REQUEST_CONTEXT)

    assert status == 418
    assert headers == {"Content-Type": "application/json", "X-Extra": "yes"}
    assert json.loads(body) == {"at": "/prod/v1/imports/abc", "id": "0b4f7e8a-request", "other": ""}


def test_render_returns_a_copy_of_the_headers() -> None:
    response = GatewayResponse(401, {"Content-Type": "application/json"}, {"application/json": "{}"})

    _, headers, _ = render_gateway_response(response, REQUEST_CONTEXT)
    headers["Injected"] = "x"

    assert response.headers == {"Content-Type": "application/json"}


def test_render_falls_back_to_the_first_template_without_a_json_one() -> None:
    response = GatewayResponse(401, {}, {"text/plain": "no entry to $context.path"})

    assert render_gateway_response(response, REQUEST_CONTEXT)[2] == b"no entry to /prod/v1/imports/abc"


def test_render_without_templates_has_an_empty_body() -> None:
    assert render_gateway_response(GatewayResponse(500, {}, {}), REQUEST_CONTEXT) == (500, {}, b"")


@pytest.mark.parametrize(
    ("response_type", "status"), [("UNAUTHORIZED", 401), ("ACCESS_DENIED", 403), ("AUTHORIZER_FAILURE", 500)]
)
def test_default_gateway_responses_are_api_gateway_s(response_type: str, status: int) -> None:
    rendered_status, headers, body = render_gateway_response(DEFAULT_GATEWAY_RESPONSES[response_type], REQUEST_CONTEXT)

    assert rendered_status == status
    assert headers["Content-Type"] == "application/json"
    json.loads(body)


@pytest.fixture(scope="module")
def stack() -> StackTemplate:
    return load_template(TEMPLATE, parameter_overrides={"DatabaseUrl": ""})


def test_template_unauthorized_response_is_problem_json_with_a_bearer_challenge(stack: StackTemplate) -> None:
    status, headers, body = render_gateway_response(stack.gateway_responses["UNAUTHORIZED"], REQUEST_CONTEXT)

    problem = json.loads(body)
    assert status == 401
    assert headers["Content-Type"] == "application/problem+json"
    assert headers["WWW-Authenticate"] == 'Bearer realm="bulkio"'
    assert problem["status"] == 401
    assert problem["code"] == "unauthorized"
    assert problem["type"] == "https://bulkio.dev/problems/unauthorized"
    assert problem["instance"] == REQUEST_CONTEXT["path"]
    assert "Authorization: Bearer" in problem["detail"]


@pytest.mark.parametrize(
    ("response_type", "status", "code"),
    [("ACCESS_DENIED", 403, "access_denied"), ("AUTHORIZER_FAILURE", 500, "authorizer_failure")],
)
def test_template_other_refusals_are_problem_json(
    stack: StackTemplate, response_type: str, status: int, code: str
) -> None:
    rendered_status, headers, body = render_gateway_response(stack.gateway_responses[response_type], REQUEST_CONTEXT)

    problem = json.loads(body)
    assert rendered_status == status
    assert headers["Content-Type"] == "application/problem+json"
    assert (problem["status"], problem["code"], problem["instance"]) == (status, code, REQUEST_CONTEXT["path"])


def test_template_authorizer_failure_names_the_request_id(stack: StackTemplate) -> None:
    _, _, body = render_gateway_response(stack.gateway_responses["AUTHORIZER_FAILURE"], REQUEST_CONTEXT)

    assert REQUEST_CONTEXT["requestId"] in json.loads(body)["detail"]


def test_template_customises_every_refusal_the_host_can_give(stack: StackTemplate) -> None:
    assert set(DEFAULT_GATEWAY_RESPONSES) <= set(stack.gateway_responses)
