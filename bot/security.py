"""The cryptography behind tipline's anonymity promises.

- Receipt codes are stored only as a slow keyed hash: HMAC-SHA256 with the pepper, then
  Argon2id with a salt derived from the pepper. The hash is deterministic so a code can be
  looked up by it; without the pepper a stolen database gives nothing to brute-force.
- Chat pseudonyms (HMAC of a chat id) key in-memory state such as drafts and back-off
  counters; they are never written anywhere.
- Tip content is encrypted at rest with Fernet (several keys, comma separated, allow
  rotation: the first encrypts, all decrypt).
- Callback data of every inline button is signed, so forged button data is told apart
  from a stale or foreign button.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2.low_level import Type, hash_secret_raw
from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class DecryptionError(Exception):
    """Stored content could not be decrypted with the configured data keys."""


def _hmac(key: bytes, label: str, value: bytes) -> bytes:
    return hmac.new(key, label.encode() + b"\x00" + value, hashlib.sha256).digest()


class Keyring:
    def __init__(
        self,
        pepper: str,
        data_key: str,
        *,
        time_cost: int = 3,
        memory_kib: int = 65536,
        parallelism: int = 1,
    ) -> None:
        if len(pepper) < 32:
            raise ValueError("the pepper needs at least 32 characters")
        self._pepper = pepper.encode()
        keys = [k.strip() for k in data_key.split(",") if k.strip()]
        if not keys:
            raise ValueError("no data key")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError as exc:
            raise ValueError("the data key is not a valid Fernet key") from exc
        self._time_cost = time_cost
        self._memory_kib = memory_kib
        self._parallelism = parallelism
        self._receipt_salt = _hmac(self._pepper, "receipt-salt", b"")[:16]

    # Receipt codes -------------------------------------------------------------------
    def receipt_hash(self, code: str) -> str:
        keyed = _hmac(self._pepper, "receipt", code.encode())
        raw = hash_secret_raw(
            secret=keyed,
            salt=self._receipt_salt,
            time_cost=self._time_cost,
            memory_cost=self._memory_kib,
            parallelism=self._parallelism,
            hash_len=32,
            type=Type.ID,
        )
        return raw.hex()

    # Pseudonyms for in-memory state ---------------------------------------------------
    def pseudonym(self, kind: str, value: int | str) -> str:
        return _hmac(self._pepper, f"pseudonym:{kind}", str(value).encode()).hex()[:32]

    # Content at rest ----------------------------------------------------------------
    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise DecryptionError("stored content does not decrypt with the configured data keys") from exc

    def rotate(self, token: str) -> str:
        """The same content encrypted under the first data key (key rotation)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError) as exc:
            raise DecryptionError("stored content does not decrypt with the configured data keys") from exc

    def encrypt_opt(self, text: str | None) -> str | None:
        return None if text is None else self.encrypt(text)

    def decrypt_opt(self, token: str | None) -> str | None:
        return None if token is None else self.decrypt(token)

    # Button data -------------------------------------------------------------------
    def sign(self, payload: str) -> str:
        """`payload~sig`: 10 base64url chars of HMAC; callback data stays under 64 bytes."""
        sig = base64.urlsafe_b64encode(_hmac(self._pepper, "button", payload.encode())[:8]).decode()[:10]
        return f"{payload}~{sig}"

    def verify(self, data: str) -> str | None:
        payload, sep, sig = data.rpartition("~")
        if not sep or not payload:
            return None
        expected = self.sign(payload).rpartition("~")[2]
        return payload if hmac.compare_digest(expected, sig) else None


def new_pepper() -> str:
    return secrets.token_urlsafe(48)


def new_data_key() -> str:
    return Fernet.generate_key().decode("ascii")


class ContactBox:
    """Keeps the chats of tipsters who asked to be told of news.

    Its key is separate from the data key: the row's token is an HMAC of the tip id and
    the chat id is encrypted, both with this key, so without it a row names neither the
    tip nor the chat.
    """

    def __init__(self, contact_key: str) -> None:
        try:
            self._fernet = Fernet(contact_key.strip().encode())
        except ValueError as exc:
            raise ValueError("the contact key is not a valid Fernet key") from exc
        self._mac_key = base64.urlsafe_b64decode(contact_key.strip().encode())

    def token(self, tip_id: int) -> str:
        return _hmac(self._mac_key, "contact", str(tip_id).encode()).hex()[:48]

    def seal(self, chat_id: int) -> str:
        return self._fernet.encrypt(str(chat_id).encode()).decode("ascii")

    def open(self, sealed: str) -> int:
        try:
            return int(self._fernet.decrypt(sealed.encode("ascii")).decode())
        except (InvalidToken, ValueError) as exc:
            raise DecryptionError("contact does not decrypt with the contact key") from exc
