"""The API's Lambda authorizer (TOKEN type): checks the bearer JWT and hands the caller to the API.

Authentication only: a valid token is allowed on the whole API, so that API Gateway may cache the answer per
token; the API function then checks the scope its route declares (bulkio.web.api.ROUTE_SCOPES).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.adapters.tokens import SERVICE_FAULTS, TokenRejected
from bulkio.bootstrap import pushing_metrics, token_verifier

logger = Logger()

# API Gateway's contract: an authorizer failing with exactly this message makes a 401 (its UNAUTHORIZED
# gateway response); any other failure is a 500.
UNAUTHORIZED = "Unauthorized"


def api_wide(method_arn: str) -> str:
    """arn:aws:execute-api:<region>:<account>:<api>/<stage>/<METHOD>/<path> -> every method and path of the
    stage: the cached policy must hold for the token's next requests to other routes too."""
    api, _, rest = method_arn.partition("/")
    stage = rest.split("/", 1)[0]
    return f"{api}/{stage}/*/*"


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        principal = token_verifier().verify(event.get("authorizationToken"))
    except TokenRejected as rejected:
        if rejected.reason in SERVICE_FAULTS:
            # The service's fault, not the caller's: a 500 (AUTHORIZER_FAILURE) rather than a 401.
            logger.error("no token can be checked", extra={"reason": rejected.reason, "detail": rejected.message})
            raise RuntimeError(rejected.message) from None
        logger.info("token rejected", extra={"reason": rejected.reason})
        raise Exception(UNAUTHORIZED) from None
    logger.debug("token accepted", extra={"subject": principal.subject, "scopes": sorted(principal.scopes)})
    return {
        "principalId": principal.subject,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": api_wide(event["methodArn"])}
            ],
        },
        "context": principal.to_context(),
    }
