#!/usr/bin/env python3
"""Signs HS256 access tokens the way `panels` issues them (claims sub, email, tenant, role,
exp, iat), with the Python standard library only.

    JWT_SECRET=... bench/jwt.py <tenant> <email> <role> [<sub>] [<ttl seconds>]
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign(secret: str, tenant: str, email: str, role: str, sub: str, ttl: int = 86_400) -> str:
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": sub, "email": email, "tenant": tenant, "role": role, "exp": now + ttl, "iat": now}
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


if __name__ == "__main__":
    if len(sys.argv) < 4 or "JWT_SECRET" not in os.environ:
        sys.exit(__doc__)
    tenant, email, role = sys.argv[1:4]
    sub = sys.argv[4] if len(sys.argv) > 4 else email
    ttl = int(sys.argv[5]) if len(sys.argv) > 5 else 86_400
    print(sign(os.environ["JWT_SECRET"], tenant, email, role, sub, ttl))
