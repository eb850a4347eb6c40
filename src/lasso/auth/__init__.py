"""Client access (CONTRACT §9): API keys, JWTs, scopes and rate limits; docs/security.md.

The pure rules live in the kernel (:mod:`lasso.kernel.access`, :mod:`lasso.kernel.ratelimit`);
this package adds what needs IO or a clock: JWT verification (PyJWT), the limiters (in
memory, or shared through Redis), the per-profile gates the request path calls, and the
node-wide service that holds them across reloads.
"""

from lasso.auth.client import ANONYMOUS, Client, Refusal
from lasso.auth.gate import ProfileGate, credential_of
from lasso.auth.limiter import LocalLimiter
from lasso.auth.service import ClientAccess
from lasso.auth.shared import SharedLimiter
from lasso.auth.tokens import JwtVerifier

__all__ = [
    "ANONYMOUS",
    "Client",
    "ClientAccess",
    "JwtVerifier",
    "LocalLimiter",
    "ProfileGate",
    "Refusal",
    "SharedLimiter",
    "credential_of",
]
