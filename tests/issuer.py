"""A token issuer for tests: real RSA and EC keys, tokens signed with them, and its JWKS as a real ASGI app."""

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

ISSUER = "https://issuer.test"
AUDIENCE = "gateway"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Issuer:
    """Keys by kid; `published` are the kids its JWKS lists; `fetches` counts JWKS requests."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[PrivateKey, str]] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.failing = False

    def add_rsa(self, kid: str, *, publish: bool = True) -> None:
        self._add(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", publish)

    def add_ec(self, kid: str, *, publish: bool = True) -> None:
        self._add(kid, ec.generate_private_key(ec.SECP256R1()), "ES256", publish)

    def _add(self, kid: str, key: PrivateKey, alg: str, publish: bool) -> None:
        self.keys[kid] = (key, alg)
        if publish:
            self.published.append(kid)

    def jwk(self, kid: str) -> dict[str, Any]:
        key, alg = self.keys[kid]
        if isinstance(key, rsa.RSAPrivateKey):
            public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        else:
            public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        return {**public, "kid": kid, "alg": alg, "use": "sig"}

    def public_pem(self, kid: str) -> bytes:
        return (
            self.keys[kid][0]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def token(self, kid: str | None, *, alg: str | None = None, **claims: Any) -> str:
        key, key_alg = self.keys[kid or next(iter(self.keys))]
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "exp": int(time.time()) + 300, **claims}
        headers = {"kid": kid} if kid is not None else None
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, alg or key_alg, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.fetches += 1
        if self.failing:
            response: Response = JSONResponse({"error": "down"}, status_code=503)
        else:
            response = JSONResponse({"keys": [self.jwk(kid) for kid in self.published]})
        await response(scope, receive, send)


def unsigned_token(claims: dict[str, Any], header: dict[str, Any]) -> str:
    """A token made by hand, as an attacker would: any header, any HMAC key (or none)."""
    return ".".join(_b64(json.dumps(part).encode()) for part in (header, claims)) + "."


def hmac_token(claims: dict[str, Any], header: dict[str, Any], secret: bytes) -> str:
    unsigned = unsigned_token(claims, header)[:-1]
    return f"{unsigned}.{_b64(hmac.new(secret, unsigned.encode(), hashlib.sha256).digest())}"


def default_claims(**claims: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "exp": int(time.time()) + 300, **claims}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
