"""Signed calls: every RPC carries the caller's ed25519 signature over what it asks.

The caller's identity is its Solana keypair. A call is signed over the method,
the sha256 of the serialized request, a timestamp and a random nonce; the
coordinator refuses stale timestamps and nonces it has seen, so a captured call
cannot be replayed, and a changed request no longer matches its signature.
Streaming uploads sign a fixed digest: their content is bound by its sha256.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature

PUBKEY = "x-frameproof-pubkey"
TIMESTAMP = "x-frameproof-timestamp"
NONCE = "x-frameproof-nonce"
SIGNATURE = "x-frameproof-signature"
STREAM_DIGEST = hashlib.sha256(b"frameproof client stream").digest()
MAX_CLOCK_SKEW_SECONDS = 60.0
# A call is fresh for MAX_CLOCK_SKEW_SECONDS either side of its timestamp: its nonce is
# remembered for that whole span.
NONCE_WINDOW_SECONDS = 2 * MAX_CLOCK_SKEW_SECONDS
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # one token: safe in the nonce journal


class AuthError(Exception):
    """The call is not authentic; the message says why, for the caller's operator."""


class TooManyCalls(AuthError):
    """More calls inside the replay window than the nonce cache holds: refused, not forgotten."""


class NonceLog(Protocol):
    """Where accepted nonces outlive the process (coordinator/api/nonce_journal.py)."""

    def load(self, since: float) -> list[tuple[str, float]]: ...

    def record(self, key: str, now: float) -> bool | None:
        """Write the key down; False when the store already held it (a log shared by several
        coordinators: another one accepted the call), None or True otherwise."""


def signing_payload(method: str, request_digest: bytes, timestamp_ms: int, nonce: str) -> bytes:
    return b"\n".join([b"frameproof-call-v1", method.encode(), request_digest.hex().encode(),
                       str(timestamp_ms).encode(), nonce.encode()])


def request_digest(request_bytes: bytes | None) -> bytes:
    return STREAM_DIGEST if request_bytes is None else hashlib.sha256(request_bytes).digest()


def sign_call(keypair: Keypair, method: str, request_bytes: bytes | None,
              now: float | None = None) -> list[tuple[str, str]]:
    """The metadata that authenticates one call."""
    timestamp_ms = int((time.time() if now is None else now) * 1000)
    nonce = secrets.token_hex(16)
    payload = signing_payload(method, request_digest(request_bytes), timestamp_ms, nonce)
    return [
        (PUBKEY, str(keypair.pubkey())),
        (TIMESTAMP, str(timestamp_ms)),
        (NONCE, nonce),
        (SIGNATURE, str(keypair.sign_message(payload))),
    ]


class NonceCache:
    """Nonces seen within the clock-skew window; older ones are rejected by timestamp anyway.

    A call's timestamp may be up to MAX_CLOCK_SKEW_SECONDS ahead of its arrival and is accepted
    until that long after it, so a nonce is kept for twice the skew after it arrived. Expired
    nonces are dropped on every call: the cache holds about (calls per second x window)
    entries, whatever the uptime. When full it refuses new calls (TooManyCalls) rather than
    forget a live nonce, which would let that call be replayed. With a `log`, accepted nonces
    are written down and read back on start, so a restart does not reopen the window.
    """

    def __init__(self, window_seconds: float = NONCE_WINDOW_SECONDS,
                 max_entries: int = 1_000_000, log: NonceLog | None = None,
                 now: float | None = None) -> None:
        self.window = window_seconds
        self.max_entries = max_entries
        self.log = log
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        if log is not None:
            since = (time.time() if now is None else now) - window_seconds
            for key, seen_at in sorted(log.load(since), key=lambda entry: entry[1]):
                self._seen[key] = seen_at

    def first_use(self, key: str, now: float) -> bool:
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - self.window:
                self._seen.popitem(last=False)
            if key in self._seen:
                return False
            if len(self._seen) >= self.max_entries:
                raise TooManyCalls(f"more than {self.max_entries} calls in {self.window:.0f}s; "
                                   "try again shortly")
            self._seen[key] = now
            # False: another coordinator sharing the log accepted this call already.
            return self.log is None or self.log.record(key, now) is not False

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(frozen=True)
class Caller:
    pubkey: str


def verify_call(metadata: dict[str, str], method: str, request_bytes: bytes | None,
                nonces: NonceCache, now: float | None = None) -> Caller:
    """Check one call's signature, freshness and uniqueness; return who made it."""
    missing = [key for key in (PUBKEY, TIMESTAMP, NONCE, SIGNATURE) if not metadata.get(key)]
    if missing:
        raise AuthError(f"unsigned call: missing {', '.join(missing)}; every call must be "
                        "signed with the caller's keypair")
    now = time.time() if now is None else now
    try:
        pubkey = Pubkey.from_string(metadata[PUBKEY])
        signature = Signature.from_string(metadata[SIGNATURE])
        timestamp_ms = int(metadata[TIMESTAMP])
    except ValueError as error:
        raise AuthError(f"malformed authentication headers: {error}") from error
    nonce = metadata[NONCE]
    if not NONCE_PATTERN.fullmatch(nonce):
        raise AuthError("malformed nonce: 16 to 64 letters, digits, '-' or '_'")
    if abs(now - timestamp_ms / 1000) > MAX_CLOCK_SKEW_SECONDS:
        raise AuthError(f"stale call: timestamp is more than {MAX_CLOCK_SKEW_SECONDS:.0f}s "
                        "from the coordinator's clock; check this machine's clock")
    payload = signing_payload(method, request_digest(request_bytes), timestamp_ms, nonce)
    if not signature.verify(pubkey, payload):
        raise AuthError("bad signature: the request does not match what was signed")
    if not nonces.first_use(f"{pubkey}:{nonce}", now):
        raise AuthError("replayed call: this nonce was already used")
    return Caller(pubkey=str(pubkey))
