"""bulkio.adapters.tokens: bearer JWTs verified with PyJWT (HS256 with a shared secret, RS256/ES256 through a
JWKS), every refusal a TokenRejected with a stable reason, and the service closed when nothing is configured."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from bulkio.adapters.tokens import AuthSettings, TokenRejected, TokenVerifier, bearer_token, mint_token
from bulkio.domain.auth import Principal
from bulkio.problems import Problem
from bulkio.web.auth import caller_from_header
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"
OTHER_SECRET = "another-secret-nobody-configured-this-service-with-0123"
ISSUER = "https://issuer.example"
AUDIENCE = "bulkio"
KEY_ID = "test-key-1"


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims(subject: str = "ann", ttl_seconds: int = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": subject, "iat": now, "exp": now + ttl_seconds, **extra}


def hs256_verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(jwt_secret=SECRET, **settings))


def rejection(verifier: TokenVerifier, authorization: str | None) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        verifier.verify(authorization)
    return caught.value


@dataclass(frozen=True)
class SigningKey:
    key: Any


class StubJwksClient:
    """Stands in for jwt.PyJWKClient: every token's signing key is the one public key it was built with."""

    def __init__(self, public_key: Any) -> None:
        self.public_key = public_key
        self.tokens_looked_up: list[str] = []

    def get_signing_key_from_jwt(self, token: str) -> SigningKey:
        self.tokens_looked_up.append(token)
        return SigningKey(self.public_key)


@pytest.fixture(scope="module")
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwks_verifier(public_key: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(), jwks_client=StubJwksClient(public_key))  # type: ignore[arg-type]


# ---------------------------------------------------------------- the Authorization header


@pytest.mark.parametrize(
    ("authorization", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER abc.def.ghi", "abc.def.ghi"),
        ("  Bearer abc.def.ghi  ", "abc.def.ghi"),
    ],
)
def test_bearer_token_takes_the_token_whatever_the_scheme_case(authorization: str, token: str) -> None:
    assert bearer_token(authorization) == token


@pytest.mark.parametrize("authorization", [None, "", "   "])
def test_bearer_token_missing_header_is_missing_token(authorization: str | None) -> None:
    with pytest.raises(TokenRejected) as caught:
        bearer_token(authorization)
    assert caught.value.reason == "missing_token"
    assert "Authorization: Bearer" in caught.value.message


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc.def.ghi", "abc.def.ghi"]
)
def test_bearer_token_wrong_scheme_or_no_token_is_malformed(authorization: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        bearer_token(authorization)
    assert caught.value.reason == "malformed_token"


# ---------------------------------------------------------------- HS256


def test_valid_hs256_token_gives_the_principal_with_subject_and_scopes() -> None:
    token = jwt.encode(claims("ann", scope="imports:read imports:write"), SECRET, algorithm="HS256")

    principal = hs256_verifier().verify(bearer(token))

    assert principal == Principal("ann", frozenset({"imports:read", "imports:write"}))


def test_valid_token_without_scopes_gives_a_principal_without_scopes() -> None:
    token = jwt.encode(claims("bob"), SECRET, algorithm="HS256")

    assert hs256_verifier().verify(bearer(token)) == Principal("bob", frozenset())


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("Basic dXNlcjpwYXNz", "malformed_token"),
        ("Bearer", "malformed_token"),
        ("Bearer not-a-jwt", "malformed_token"),
        ("Bearer a.b", "malformed_token"),
        ("Bearer !!!.???.###", "malformed_token"),
        (f"Bearer {b64url(b'[1, 2]')}.{b64url_json({})}.c2ln", "malformed_token"),  # header not an object
    ],
)
def test_unusable_authorization_headers_are_refused_with_their_reason(authorization: str | None, reason: str) -> None:
    assert rejection(hs256_verifier(), authorization).reason == reason


def test_expired_token_is_expired_token() -> None:
    token = mint_token(SECRET, "ann", ["imports:read"], ttl_seconds=60, now=time.time() - 3600)

    rejected = rejection(hs256_verifier(), bearer(token))

    assert rejected.reason == "expired_token"


def test_token_expired_within_the_default_leeway_still_passes() -> None:
    ttl_seconds = 60
    expired_ten_seconds_ago = mint_token(SECRET, "ann", [], ttl_seconds=ttl_seconds, now=time.time() - ttl_seconds - 10)

    assert AuthSettings().leeway_seconds == 30
    assert hs256_verifier().verify(bearer(expired_ten_seconds_ago)).subject == "ann"


def test_token_expired_beyond_the_default_leeway_is_expired_token() -> None:
    ttl_seconds = 60
    expired_a_minute_ago = mint_token(SECRET, "ann", [], ttl_seconds=ttl_seconds, now=time.time() - ttl_seconds - 60)

    assert rejection(hs256_verifier(), bearer(expired_a_minute_ago)).reason == "expired_token"


def test_leeway_setting_is_honoured() -> None:
    ttl_seconds = 60
    expired_ten_seconds_ago = mint_token(SECRET, "ann", [], ttl_seconds=ttl_seconds, now=time.time() - ttl_seconds - 10)

    assert rejection(hs256_verifier(leeway_seconds=0), bearer(expired_ten_seconds_ago)).reason == "expired_token"


def test_token_signed_with_another_secret_is_invalid_signature() -> None:
    forged = jwt.encode(claims("ann", scope="admin"), OTHER_SECRET, algorithm="HS256")

    assert rejection(hs256_verifier(), bearer(forged)).reason == "invalid_signature"


def test_tampered_payload_is_invalid_signature() -> None:
    header, _, signature = jwt.encode(claims("ann", scope="imports:read"), SECRET, algorithm="HS256").split(".")
    escalated = b64url_json(claims("ann", scope="admin"))

    rejected = rejection(hs256_verifier(), bearer(f"{header}.{escalated}.{signature}"))

    assert rejected.reason == "invalid_signature"


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE"])
def test_unsigned_alg_none_token_is_refused(algorithm: str) -> None:
    unsigned = f"{b64url_json({'alg': algorithm, 'typ': 'JWT'})}.{b64url_json(claims('ann', scope='admin'))}."

    rejected = rejection(hs256_verifier(), bearer(unsigned))

    assert rejected.reason == "invalid_token"
    assert algorithm in rejected.message


def test_token_without_alg_is_refused() -> None:
    token = f"{b64url_json({'typ': 'JWT'})}.{b64url_json(claims('ann'))}.c2ln"

    assert rejection(hs256_verifier(), bearer(token)).reason == "invalid_token"


def test_token_without_sub_is_invalid_claims() -> None:
    payload = claims()
    del payload["sub"]
    token = jwt.encode(payload, SECRET, algorithm="HS256")

    rejected = rejection(hs256_verifier(), bearer(token))

    assert rejected.reason == "invalid_claims"
    assert "sub" in rejected.message


def test_token_without_exp_is_invalid_claims() -> None:
    payload = claims()
    del payload["exp"]
    token = jwt.encode(payload, SECRET, algorithm="HS256")

    rejected = rejection(hs256_verifier(), bearer(token))

    assert rejected.reason == "invalid_claims"
    assert "exp" in rejected.message


def test_token_with_a_non_string_subject_is_refused() -> None:
    token = jwt.encode(claims() | {"sub": 42}, SECRET, algorithm="HS256")

    assert rejection(hs256_verifier(), bearer(token)).reason == "invalid_token"


# ---------------------------------------------------------------- issuer and audience


def test_issuer_and_audience_matching_the_settings_are_accepted() -> None:
    token = mint_token(SECRET, "ann", ["imports:read"], issuer=ISSUER, audience=AUDIENCE)

    principal = hs256_verifier(issuer=ISSUER, audience=AUDIENCE).verify(bearer(token))

    assert principal == Principal("ann", frozenset({"imports:read"}))


def test_wrong_issuer_is_invalid_claims_when_an_issuer_is_required() -> None:
    token = mint_token(SECRET, "ann", [], issuer="https://someone-else.example")

    assert rejection(hs256_verifier(issuer=ISSUER), bearer(token)).reason == "invalid_claims"


def test_missing_issuer_is_invalid_claims_when_an_issuer_is_required() -> None:
    token = mint_token(SECRET, "ann", [])

    assert rejection(hs256_verifier(issuer=ISSUER), bearer(token)).reason == "invalid_claims"


def test_wrong_audience_is_invalid_claims_when_an_audience_is_required() -> None:
    token = mint_token(SECRET, "ann", [], audience="another-service")

    assert rejection(hs256_verifier(audience=AUDIENCE), bearer(token)).reason == "invalid_claims"


def test_missing_audience_is_invalid_claims_when_an_audience_is_required() -> None:
    token = mint_token(SECRET, "ann", [])

    assert rejection(hs256_verifier(audience=AUDIENCE), bearer(token)).reason == "invalid_claims"


def test_issuer_and_audience_are_not_checked_when_not_configured() -> None:
    token = mint_token(SECRET, "ann", ["exports:read"], issuer="https://anyone.example", audience="anything")

    assert hs256_verifier().verify(bearer(token)) == Principal("ann", frozenset({"exports:read"}))


# ---------------------------------------------------------------- fail closed


def test_no_secret_and_no_jwks_refuses_every_token_as_auth_not_configured() -> None:
    verifier = TokenVerifier(AuthSettings())
    token = mint_token(SECRET, "ann", ["admin"])

    rejected = rejection(verifier, bearer(token))

    assert rejected.reason == "auth_not_configured"
    assert "AUTH_JWT_SECRET" in rejected.message


def test_no_configuration_refuses_even_an_unsigned_token() -> None:
    unsigned = f"{b64url_json({'alg': 'none'})}.{b64url_json(claims('ann', scope='admin'))}."

    assert rejection(TokenVerifier(AuthSettings()), bearer(unsigned)).reason == "auth_not_configured"


def test_empty_secret_does_not_verify_tokens_signed_with_an_empty_secret() -> None:
    signing_input = f"{b64url_json({'alg': 'HS256', 'typ': 'JWT'})}.{b64url_json(claims('ann', scope='admin'))}"
    signature = hmac.new(b"", signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"

    assert rejection(TokenVerifier(AuthSettings(jwt_secret="")), bearer(token)).reason == "auth_not_configured"


# ---------------------------------------------------------------- RS256 / ES256 through a JWKS


def test_rs256_token_verified_through_the_jwks_gives_the_principal(rsa_private_key: rsa.RSAPrivateKey) -> None:
    client = StubJwksClient(rsa_private_key.public_key())
    verifier = TokenVerifier(AuthSettings(scope_prefix="bulkio/"), jwks_client=client)  # type: ignore[arg-type]
    token = jwt.encode(
        claims("user-123", scope="bulkio/exports:read"), rsa_private_key, algorithm="RS256", headers={"kid": KEY_ID}
    )

    principal = verifier.verify(bearer(token))

    assert principal == Principal("user-123", frozenset({"exports:read"}))
    assert client.tokens_looked_up == [token]


def test_es256_token_verified_through_the_jwks_gives_the_principal(
    ec_private_key: ec.EllipticCurvePrivateKey,
) -> None:
    token = jwt.encode(claims("user-9", scp=["imports:read"]), ec_private_key, algorithm="ES256")

    principal = jwks_verifier(ec_private_key.public_key()).verify(bearer(token))

    assert principal == Principal("user-9", frozenset({"imports:read"}))


def test_rs256_token_signed_by_another_key_is_invalid_signature(rsa_private_key: rsa.RSAPrivateKey) -> None:
    impostor_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims("ann", scope="admin"), impostor_key, algorithm="RS256")

    rejected = rejection(jwks_verifier(rsa_private_key.public_key()), bearer(token))

    assert rejected.reason == "invalid_signature"


def test_expired_rs256_token_is_expired_token(rsa_private_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims("ann", ttl_seconds=-3600), rsa_private_key, algorithm="RS256")

    assert rejection(jwks_verifier(rsa_private_key.public_key()), bearer(token)).reason == "expired_token"


def test_signing_key_the_issuer_does_not_publish_is_invalid_signature(rsa_private_key: rsa.RSAPrivateKey) -> None:
    class UnknownKidJwksClient:
        def get_signing_key_from_jwt(self, token: str) -> SigningKey:
            raise jwt.PyJWKClientError('Unable to find a signing key that matches: "rotated-away"')

    verifier = TokenVerifier(AuthSettings(), jwks_client=UnknownKidJwksClient())  # type: ignore[arg-type]
    token = jwt.encode(claims("ann"), rsa_private_key, algorithm="RS256", headers={"kid": "rotated-away"})

    assert rejection(verifier, bearer(token)).reason == "invalid_signature"


def test_algorithm_confusion_hs256_signed_with_the_public_key_is_refused(rsa_private_key: rsa.RSAPrivateKey) -> None:
    """The classic attack: the RSA public key (which anyone can fetch) used as an HMAC secret."""
    public_key = rsa_private_key.public_key()
    public_pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64url_json({"alg": "HS256", "typ": "JWT"})
    payload = b64url_json(claims("attacker", scope="admin"))
    signing_input = f"{header}.{payload}".encode()
    signature = jwt.get_algorithm_by_name("HS256").sign(signing_input, public_pem)
    forged = f"{header}.{payload}.{b64url(signature)}"
    client = StubJwksClient(public_key)
    verifier = TokenVerifier(AuthSettings(), jwks_client=client)  # type: ignore[arg-type]

    rejected = rejection(verifier, bearer(forged))

    assert rejected.reason == "invalid_token"
    assert "HS256" in rejected.message
    assert client.tokens_looked_up == []  # the public key was never even fetched for an HS256 token


def test_rs256_token_when_only_a_secret_is_configured_is_refused(rsa_private_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims("ann", scope="admin"), rsa_private_key, algorithm="RS256")

    rejected = rejection(hs256_verifier(), bearer(token))

    assert rejected.reason == "invalid_token"
    assert "RS256" in rejected.message


def test_hs256_token_is_still_accepted_when_a_jwks_is_configured_too(rsa_private_key: rsa.RSAPrivateKey) -> None:
    client = StubJwksClient(rsa_private_key.public_key())
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET), jwks_client=client)  # type: ignore[arg-type]
    token = mint_token(SECRET, "ann", ["imports:read"])

    assert verifier.verify(bearer(token)) == Principal("ann", frozenset({"imports:read"}))
    assert client.tokens_looked_up == []


def test_rs256_token_is_not_checked_against_the_shared_secret_when_both_are_configured(
    rsa_private_key: rsa.RSAPrivateKey,
) -> None:
    client = StubJwksClient(rsa_private_key.public_key())
    verifier = TokenVerifier(AuthSettings(jwt_secret=SECRET), jwks_client=client)  # type: ignore[arg-type]
    token = jwt.encode(claims("ann"), rsa_private_key, algorithm="RS256")

    assert verifier.verify(bearer(token)).subject == "ann"
    assert client.tokens_looked_up == [token]


def test_es256_header_on_a_token_whose_jwks_key_is_rsa_is_refused(
    rsa_private_key: rsa.RSAPrivateKey, ec_private_key: ec.EllipticCurvePrivateKey
) -> None:
    token = jwt.encode(claims("ann"), ec_private_key, algorithm="ES256", headers={"kid": KEY_ID})

    rejected = rejection(jwks_verifier(rsa_private_key.public_key()), bearer(token))

    assert rejected.reason in {"invalid_signature", "invalid_token"}


@pytest.mark.parametrize(
    "header", [{"alg": "HS256", "kid": 5}, {"alg": "HS256", "crit": ["x-unknown"]}], ids=["int-kid", "crit"]
)
def test_header_pyjwt_refuses_is_a_token_rejection(header: dict[str, Any]) -> None:
    token = f"{b64url_json(header)}.{b64url_json(claims('ann'))}.c2ln"

    rejected = rejection(hs256_verifier(), bearer(token))

    assert rejected.reason in {"malformed_token", "invalid_token"}


class JwksHandler(BaseHTTPRequestHandler):
    jwks: bytes = b'{"keys": []}'

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.jwks)))
        self.end_headers()
        self.wfile.write(self.jwks)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_url(rsa_private_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A JWKS served over HTTP on localhost, as an issuer publishes it."""
    for proxy_variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy_variable, raising=False)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_private_key.public_key()))
    handler = type("PublishedJwks", (JwksHandler,), {"jwks": json.dumps({"keys": [{**jwk, "kid": KEY_ID}]}).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_real_jwks_client_verifies_rs256_tokens_by_key_id(rsa_private_key: rsa.RSAPrivateKey, jwks_url: str) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks_url))
    token = jwt.encode(
        claims("carol", scope="imports:write"), rsa_private_key, algorithm="RS256", headers={"kid": KEY_ID}
    )

    assert verifier.verify(bearer(token)) == Principal("carol", frozenset({"imports:write"}))


def test_real_jwks_client_refuses_an_unpublished_key_id(rsa_private_key: rsa.RSAPrivateKey, jwks_url: str) -> None:
    verifier = TokenVerifier(AuthSettings(jwks_url=jwks_url))
    token = jwt.encode(claims("carol"), rsa_private_key, algorithm="RS256", headers={"kid": "not-published"})

    assert rejection(verifier, bearer(token)).reason == "invalid_signature"


def test_real_jwks_client_refuses_the_algorithm_confusion_attack(
    rsa_private_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    public_pem = rsa_private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url_json({"alg": "HS256", "kid": KEY_ID})
    payload = b64url_json(claims("attacker", scope="admin"))
    signature = jwt.get_algorithm_by_name("HS256").sign(f"{header}.{payload}".encode(), public_pem)

    rejected = rejection(
        TokenVerifier(AuthSettings(jwks_url=jwks_url)), bearer(f"{header}.{payload}.{b64url(signature)}")
    )

    assert rejected.reason == "invalid_token"


def test_real_jwks_client_refuses_an_es256_token_naming_a_published_rsa_key(
    ec_private_key: ec.EllipticCurvePrivateKey, jwks_url: str
) -> None:
    token = jwt.encode(claims("attacker", scope="admin"), ec_private_key, algorithm="ES256", headers={"kid": KEY_ID})

    rejected = rejection(TokenVerifier(AuthSettings(jwks_url=jwks_url)), bearer(token))

    assert rejected.reason in {"invalid_signature", "invalid_token"}


# ---------------------------------------------------------------- messages never echo the token


def refusals_of_real_looking_tokens(rsa_private_key: rsa.RSAPrivateKey) -> list[tuple[TokenVerifier, str]]:
    header, _, signature = mint_token(SECRET, "ann", ["imports:read"]).split(".")
    return [
        (hs256_verifier(), mint_token(SECRET, "ann", [], ttl_seconds=60, now=time.time() - 3600)),
        (hs256_verifier(), mint_token(OTHER_SECRET, "ann", ["admin"])),
        (hs256_verifier(), f"{header}.{b64url_json(claims('ann', scope='admin'))}.{signature}"),
        (hs256_verifier(issuer=ISSUER), mint_token(SECRET, "ann", [], issuer="https://elsewhere.example")),
        (hs256_verifier(audience=AUDIENCE), mint_token(SECRET, "ann", [], audience="elsewhere")),
        (hs256_verifier(), jwt.encode({"sub": "ann"}, SECRET, algorithm="HS256")),
        (hs256_verifier(), jwt.encode(claims("ann"), rsa_private_key, algorithm="RS256")),
        (TokenVerifier(AuthSettings()), mint_token(SECRET, "ann", [])),
        (hs256_verifier(), "definitely-not-a-jwt-but-a-secret-value-0123456789"),
    ]


def test_rejection_messages_never_contain_the_token(rsa_private_key: rsa.RSAPrivateKey) -> None:
    for verifier, token in refusals_of_real_looking_tokens(rsa_private_key):
        rejected = rejection(verifier, bearer(token))
        signature = token.rsplit(".", 1)[-1]
        assert token not in rejected.message, rejected.reason
        assert token not in str(rejected), rejected.reason
        assert signature not in rejected.message, rejected.reason
        assert rejected.message == str(rejected)


# ---------------------------------------------------------------- minting


def test_minted_token_round_trips_through_the_verifier() -> None:
    token = mint_token(SECRET, "ann", ["imports:write", "exports:read"], issuer=ISSUER, audience=AUDIENCE)

    principal = hs256_verifier(issuer=ISSUER, audience=AUDIENCE).verify(bearer(token))

    assert principal == Principal("ann", frozenset({"imports:write", "exports:read"}))


def test_minted_token_carries_the_standard_claims() -> None:
    issued_at = 1_700_000_000
    token = mint_token(SECRET, "ann", ["imports:read", "admin"], ttl_seconds=120, issuer=ISSUER, now=issued_at)

    minted = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert minted["sub"] == "ann"
    assert minted["scope"] == "imports:read admin"
    assert (minted["iat"], minted["exp"]) == (issued_at, issued_at + 120)
    assert minted["iss"] == ISSUER
    assert "aud" not in minted
    assert minted["jti"]


def test_each_minted_token_has_its_own_id() -> None:
    first = jwt.decode(mint_token(SECRET, "ann", [], now=1_700_000_000), options={"verify_signature": False})
    second = jwt.decode(mint_token(SECRET, "ann", [], now=1_700_000_000), options={"verify_signature": False})

    assert first["jti"] != second["jti"]


def test_minted_token_is_refused_by_a_verifier_with_another_secret() -> None:
    token = mint_token(OTHER_SECRET, "ann", ["admin"])

    assert rejection(hs256_verifier(), bearer(token)).reason == "invalid_signature"


def test_an_unreachable_jwks_is_the_services_fault_not_the_callers(rsa_private_key: rsa.RSAPrivateKey) -> None:
    # A port nothing listens on: the issuer's keys cannot be fetched.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = TokenVerifier(AuthSettings(jwks_url=f"http://127.0.0.1:{port}/.well-known/jwks.json"))
    token = jwt.encode(claims("ann"), rsa_private_key, algorithm="RS256", headers={"kid": KEY_ID})

    rejected = rejection(verifier, bearer(token))

    assert rejected.reason == "keys_unavailable"
    with pytest.raises(Problem) as raised:
        caller_from_header(verifier, bearer(token))
    assert (raised.value.status, raised.value.code) == (503, "keys_unavailable")
