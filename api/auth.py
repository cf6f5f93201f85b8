"""Optional API-key authentication: ``X-API-Key`` names the caller, ``API_KEYS`` says which models
each key may use. 401 without a (known) key, 403 for a known key on a model it may not use.

Keys are compared in constant time so response timing does not reveal how much of a guess was
right. With ``API_KEYS`` unset every request is allowed (a private network deployment).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from api.config import ALL_MODELS
from api.errors import ApiError

API_KEY_HEADER = "X-API-Key"
CHALLENGE = {"WWW-Authenticate": f'APIKey header="{API_KEY_HEADER}"'}
"""RFC 9110 wants a challenge on every 401; API-key schemes have no standard one, so name ours."""


class AuthenticationError(ApiError):
    """A 401: no key, or one not in ``API_KEYS``. A type of its own so that every one of them, from
    whichever route or check, is answered by :func:`api.authlimit.install`'s handler, which counts
    it against the client's address."""

    def __init__(self, detail: str) -> None:
        super().__init__(401, "unauthorized", detail, reason="unauthorized", headers=CHALLENGE)


class Authenticator:
    def __init__(self, keys: Mapping[str, frozenset[str]]) -> None:
        self._keys = dict(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def _models_of(self, key: str | None) -> frozenset[str]:
        if not key:
            raise AuthenticationError(f"missing API key: send it in the {API_KEY_HEADER} header")
        found: frozenset[str] | None = None
        for known, models in self._keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                found = models
        if found is None:
            raise AuthenticationError("unknown API key")
        return found

    def principal(self, key: str | None) -> str | None:
        """A stable name for the caller that is safe to store: a digest of its API key when keys are
        checked, else None (every caller is then the same anonymous principal).

        Per-caller state in Redis (idempotency keys) is scoped by it, so tenants cannot see each
        other's entries; the key itself, a secret, never becomes part of a key name. Only an
        authenticated key counts: with authentication off, a header value proves nothing.
        """
        if not (self.enabled and key):
            return None
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def authenticate(self, key: str | None) -> None:
        """Any valid key (for requests not tied to a model yet)."""
        if self.enabled:
            self._models_of(key)

    def authorize(self, key: str | None, model: str) -> None:
        """A valid key that may use ``model``."""
        if not self.enabled:
            return
        models = self._models_of(key)
        if ALL_MODELS not in models and model not in models:
            raise ApiError(403, "forbidden", f"this API key may not use model {model!r}", reason="forbidden")
