"""Bearer JWTs: verification (HS256 with a shared secret locally, RS256/ES256 through a JWKS URL in production)
and minting for local use. The one place that knows about PyJWT.

AuthSettings, built by bulkio.config from the environment: AUTH_JWT_SECRET (HS256), AUTH_JWKS_URL (RS256/ES256,
e.g. a Cognito user pool's https://cognito-idp.<region>.amazonaws.com/<pool>/.well-known/jwks.json), AUTH_ISSUER
and AUTH_AUDIENCE (checked when set), AUTH_LEEWAY_SECONDS (clock skew, default 30), AUTH_SCOPE_PREFIX (a resource
server's prefix on scope names, e.g. Cognito's "bulkio/"). With neither a secret nor a JWKS URL every token is
refused: the service fails closed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from bulkio.domain.auth import Principal, scopes_from_claims

SYMMETRIC_ALGORITHMS = ("HS256",)
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
JWKS_CACHE_SECONDS = 300
NOT_CONFIGURED = "auth_not_configured"  # no secret and no JWKS URL
KEYS_UNAVAILABLE = "keys_unavailable"  # the issuer's JWKS could not be fetched
SERVICE_FAULTS = frozenset({NOT_CONFIGURED, KEYS_UNAVAILABLE})  # reasons that are the service's fault, not the caller's


@dataclass(frozen=True, slots=True)
class AuthSettings:
    jwt_secret: str = ""
    jwks_url: str = ""
    issuer: str = ""
    audience: str = ""
    leeway_seconds: int = 30
    scope_prefix: str = ""  # a resource server's prefix on scope names (Cognito: "bulkio/")


class TokenRejected(Exception):
    """Why a request carries no usable token. `reason` is a stable code; the message says how to fix it and
    never contains the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise TokenRejected(
            "missing_token", "this operation needs a bearer token: send the header Authorization: Bearer <token>"
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected(
            "malformed_token", "the Authorization header must read 'Bearer <token>' (a JWT), with one space"
        )
    return token.strip()


class TokenVerifier:
    """`on_outcome` hears every check's outcome: "accepted", or the reason a token was refused (for metrics)."""

    def __init__(
        self,
        settings: AuthSettings,
        jwks_client: jwt.PyJWKClient | None = None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_outcome = on_outcome or (lambda _: None)
        self._jwks = jwks_client or (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS, timeout=5)
            if settings.jwks_url
            else None
        )

    def verify(self, authorization: str | None) -> Principal:
        try:
            principal = self._verify(authorization)
        except TokenRejected as rejected:
            self._on_outcome(rejected.reason)
            raise
        self._on_outcome("accepted")
        return principal

    def _verify(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as error:  # not base64/JSON, or a header PyJWT refuses (crit, kid type)
            raise TokenRejected(
                "malformed_token", "the bearer token is not a JWT (header.payload.signature)"
            ) from error
        key, algorithms = self._key_for(token, algorithm)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.settings.audience or None,
                issuer=self.settings.issuer or None,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.settings.audience)},
            )
        except jwt.ExpiredSignatureError as error:
            raise TokenRejected("expired_token", "the bearer token has expired: get a new one") from error
        except jwt.InvalidSignatureError as error:
            raise TokenRejected(
                "invalid_signature", "the bearer token's signature does not verify: it was not issued for this service"
            ) from error
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as error:
            raise TokenRejected(
                "invalid_claims", f"the bearer token was issued for another service ({error}): get one for this one"
            ) from error
        except jwt.MissingRequiredClaimError as error:
            raise TokenRejected("invalid_claims", f"the bearer token lacks a required claim: {error}") from error
        except jwt.InvalidTokenError as error:
            raise TokenRejected("invalid_token", f"the bearer token is not valid: {error}") from error
        except (jwt.InvalidKeyError, TypeError, ValueError) as error:
            # A header naming a key of another kind than its algorithm: refused, never a crash.
            raise TokenRejected("invalid_token", "the bearer token's algorithm does not fit its key") from error
        return Principal(str(claims["sub"]), scopes_from_claims(claims, self.settings.scope_prefix))

    def _key_for(self, token: str, algorithm: Any) -> tuple[Any, tuple[str, ...]]:
        """A token's algorithm picks its key kind, and only that kind: an HS256 token is never checked against
        a public key (the algorithm-confusion attack), and `none` is never accepted."""
        if algorithm in SYMMETRIC_ALGORITHMS and self.settings.jwt_secret:
            return self.settings.jwt_secret, SYMMETRIC_ALGORITHMS
        if algorithm in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            try:
                signing_key = self._jwks.get_signing_key_from_jwt(token)
            except jwt.PyJWKClientConnectionError as error:
                raise TokenRejected(
                    KEYS_UNAVAILABLE, f"the token issuer's keys could not be fetched ({error}): retry shortly"
                ) from error
            except (jwt.PyJWKClientError, jwt.InvalidTokenError) as error:
                raise TokenRejected(
                    "invalid_signature", f"the bearer token's signing key is not one the issuer publishes: {error}"
                ) from error
            # The key's own algorithm, not the one the token claims: an ES256 header on an RSA key is refused.
            key_algorithm = getattr(signing_key, "algorithm_name", None) or algorithm
            if key_algorithm != algorithm:
                raise TokenRejected(
                    "invalid_token", f"the token says {algorithm} but its key {key_algorithm}: it was not issued so"
                )
            return signing_key.key, (key_algorithm,)
        if not self.settings.jwt_secret and self._jwks is None:
            raise TokenRejected(
                NOT_CONFIGURED,
                "the service has no way to check tokens (neither AUTH_JWT_SECRET nor AUTH_JWKS_URL is set), "
                "so it accepts none: an operator must configure one",
            )
        accepted = (SYMMETRIC_ALGORITHMS if self.settings.jwt_secret else ()) + (
            ASYMMETRIC_ALGORITHMS if self._jwks is not None else ()
        )
        raise TokenRejected(
            "invalid_token", f"tokens signed with {algorithm!r} are not accepted: this service accepts {accepted}"
        )


def mint_token(
    secret: str,
    subject: str,
    scopes: Iterable[str],
    *,
    ttl_seconds: int = 3600,
    issuer: str = "",
    audience: str = "",
    now: float | None = None,
) -> str:
    """An HS256 token as the local stack accepts it (`make token`, tests)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
