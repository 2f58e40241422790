"""Keys and tokens for tests/jwt.rs, made by an implementation other than
the one under test: `cryptography` generates the keys, PyJWT signs.

Usage: jwt_tokens.py OUT_DIR NOW

Writes into OUT_DIR the key files (hs.secret, rsa.pem, rsa_pkcs1.pem,
ec.pem, jwks.json, jwks_rotated.json) and tokens.json, a map from a case name to its token,
all timed relative to NOW (Unix seconds)."""

import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

out, now = sys.argv[1], int(sys.argv[2])


def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def spki(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


secret = os.urandom(48).hex().encode()
other_secret = os.urandom(48).hex().encode()
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
other_ec = ec.generate_private_key(ec.SECP256R1())

write("hs.secret", secret + b"\n")
write("rsa.pem", spki(rsa_key))
write(
    "rsa_pkcs1.pem",
    rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ),
)
write("ec.pem", spki(ec_key))

rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
ec_jwk = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
ec_jwk.update(kid="ec-1")
write("jwks.json", json.dumps({"keys": [rsa_jwk, ec_jwk]}).encode())
# The set after a rotation: the old RSA key retired, a new one in its place.
new_jwk = RSAAlgorithm.to_jwk(other_rsa.public_key(), as_dict=True)
new_jwk.update(kid="rsa-new", alg="RS256", use="sig")
write("jwks_rotated.json", json.dumps({"keys": [new_jwk, ec_jwk]}).encode())

life = {"exp": now + 600, "nbf": now - 10, "iat": now - 10}
tokens = {}


def sign(name, claims, key, alg, **headers):
    tokens[name] = jwt.encode(claims, key, algorithm=alg, headers=headers or None)


def hs256_by_hand(claims, key):
    """HS256 over raw bytes: PyJWT rightly refuses a PEM as an HMAC secret,
    which is exactly the forgery the confusion case needs."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


alice = {"sub": "alice", **life, "subscribe": ["chat", "news.*"], "publish": ["chat"]}
sign("hs_valid", alice, secret, "HS256")
sign("hs_short", {**alice, "exp": now + 2}, secret, "HS256")
sign("hs_soon", {**alice, "exp": now + 6}, secret, "HS256")
sign("hs_bob", {"sub": "bob", **life, "subscribe": ["chat"]}, secret, "HS256")
sign("rs_valid", {"sub": "bob", **life, "subscribe": ["a.*"]}, rsa_key, "RS256")
sign("es_valid", {"sub": "carol", "exp": now + 600, "publish": ["x"]}, ec_key, "ES256")

sign("expired", {"sub": "alice", "exp": now - 1}, secret, "HS256")
sign("expires_now", {"sub": "alice", "exp": now}, secret, "HS256")
sign("not_yet_valid", {"sub": "alice", "nbf": now + 60}, secret, "HS256")
sign("rs_expired", {"sub": "bob", "exp": now - 1}, rsa_key, "RS256")

sign("hs_wrong_key", alice, other_secret, "HS256")
sign("rs_wrong_key", alice, other_rsa, "RS256")
sign("es_wrong_key", alice, other_ec, "ES256")

tokens["none"] = jwt.encode(alice, None, algorithm="none")
tokens["confusion"] = hs256_by_hand(alice, spki(rsa_key))
sign("es_for_rsa", alice, ec_key, "ES256")

sign("rs_missing_sub", {**life, "subscribe": ["chat"]}, rsa_key, "RS256")
sign("hs_bad_pattern", {"sub": "alice", "subscribe": ["*"]}, secret, "HS256")

sign("jwks_rsa", {"sub": "dave", **life}, rsa_key, "RS256", kid="rsa-1")
sign("jwks_ec", {"sub": "erin", **life}, ec_key, "ES256", kid="ec-1")
sign("jwks_unknown_kid", {"sub": "dave", **life}, rsa_key, "RS256", kid="rsa-2")
sign("jwks_no_kid", {"sub": "dave", **life}, rsa_key, "RS256")
sign("jwks_kid_of_other_key", {"sub": "erin", **life}, ec_key, "ES256", kid="rsa-1")
sign("jwks_wrong_key", {"sub": "dave", **life}, other_rsa, "RS256", kid="rsa-1")
sign("jwks_new", {"sub": "dave", **life}, other_rsa, "RS256", kid="rsa-new")

write("tokens.json", json.dumps(tokens, indent=1).encode())
print(f"wrote {len(tokens)} tokens")
