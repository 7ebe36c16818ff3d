"""`message_content` (and custom messages) encrypted at rest when
FOLLOWUP_ENCRYPTION_KEY is set: Fernet (AES-128-CBC + HMAC-SHA256) from the
`cryptography` package, not hand-made crypto.

Stored values carry a prefix, so rows written before the key was set stay
readable, and a database read without the key shows that a value is encrypted
rather than returning ciphertext as if it were the message.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "fernet:"


class CipherError(Exception):
    """A stored value could not be decrypted with the configured key."""


class MessageCipher:
    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    def seal(self, text: str) -> str:
        if self._fernet is None:
            return text
        return PREFIX + self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def open(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # written before encryption was turned on
        if self._fernet is None:
            raise CipherError("value is encrypted and FOLLOWUP_ENCRYPTION_KEY is not set")
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise CipherError("value does not decrypt with FOLLOWUP_ENCRYPTION_KEY") from exc


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")
