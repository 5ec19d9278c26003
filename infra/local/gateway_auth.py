"""API Gateway's handling of a Lambda (TOKEN) authorizer, as the local functions host emulates it: IAM policy
evaluation, the verdict drawn from the authorizer's answer, and the gateway responses it answers with."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

from infra.local.template_model import ACCOUNT_ID, REGION, GatewayResponse
from infra.local.workers import Outcome

# What API Gateway answers itself when the template does not customise it (GatewayResponses).
DEFAULT_GATEWAY_RESPONSES = {
    "UNAUTHORIZED": GatewayResponse(
        401, {"Content-Type": "application/json"}, {"application/json": '{"message":"Unauthorized"}'}
    ),
    "ACCESS_DENIED": GatewayResponse(
        403,
        {"Content-Type": "application/json"},
        {"application/json": '{"Message":"User is not authorized to access this resource with an explicit deny"}'},
    ),
    "AUTHORIZER_FAILURE": GatewayResponse(
        500, {"Content-Type": "application/json"}, {"application/json": '{"message": null}'}
    ),
}


@dataclass(frozen=True)
class AuthorizerVerdict:
    """What API Gateway makes of a Lambda authorizer's answer: the requestContext.authorizer the integration
    gets, or the gateway response it answers with instead."""

    context: dict[str, Any] | None = None
    refusal: str | None = None  # UNAUTHORIZED, ACCESS_DENIED or AUTHORIZER_FAILURE


def method_arn(stage: str, method: str, path: str) -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:local/{stage}/{method}{path}"


def policy_allows(policy: Any, arn: str) -> bool:
    """IAM evaluation as API Gateway does it for execute-api:Invoke: an explicit Deny wins, else an Allow must
    match (resources with * and ? wildcards)."""
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    allowed = False
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict):
            continue  # not a statement: it grants nothing
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        # Action names are case-insensitive in IAM; resources are not.
        if not any(fnmatch.fnmatchcase("execute-api:invoke", str(action).lower()) for action in actions):
            continue
        if any(fnmatch.fnmatchcase(arn, str(resource)) for resource in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def authorizer_verdict(outcome: Outcome, arn: str) -> AuthorizerVerdict:
    if outcome.failed:
        error = outcome.json() or {}
        unauthorized = isinstance(error, dict) and error.get("errorMessage") == "Unauthorized"
        return AuthorizerVerdict(refusal="UNAUTHORIZED" if unauthorized else "AUTHORIZER_FAILURE")
    answer = outcome.json()
    if not isinstance(answer, dict) or "principalId" not in answer or "policyDocument" not in answer:
        return AuthorizerVerdict(refusal="AUTHORIZER_FAILURE")
    statements = answer["policyDocument"].get("Statement") if isinstance(answer["policyDocument"], dict) else None
    statements = [statements] if isinstance(statements, dict) else statements
    if not isinstance(statements, list) or not all(isinstance(statement, dict) for statement in statements):
        return AuthorizerVerdict(refusal="AUTHORIZER_FAILURE")  # API Gateway: a malformed policy is a 500
    if not policy_allows(answer["policyDocument"], arn):
        return AuthorizerVerdict(refusal="ACCESS_DENIED")
    return AuthorizerVerdict(context={**(answer.get("context") or {}), "principalId": answer["principalId"]})


def render_gateway_response(response: GatewayResponse, context: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; $context.<name> variables in the template are filled in."""
    template = response.templates.get("application/json") or next(iter(response.templates.values()), "")
    # Escaped as a JSON string's content: a hostile path must not break the body out of its quotes.
    body = re.sub(r"\$context\.(\w+)", lambda match: json.dumps(context.get(match[1], ""))[1:-1], template)
    return response.status, dict(response.headers), body.encode()
