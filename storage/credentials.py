"""Callback credentials, encrypted at rest.

API tokens are stored only as digests, so the token to send back to a callback URL
(``Authorization: Token <token>``, as NTIA's scos-sensor does: the receiver checks
it against the token it gave the sensor) is kept, when an entry's callback_url is
set, encrypted with Fernet (AES-128-CBC and HMAC-SHA256) under a key of the sensor's
own: ``SCOS_HOME/secret.key``, made (mode 0600) on first use. Losing the key loses
the stored credentials, nothing else.
"""

import os
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class CredentialError(ValueError):
    """A stored credential that the key cannot decrypt (the key changed)."""


def load_key(path: Path) -> bytes:
    """The key in ``path``, made first if there is none (several processes may race:
    the key is written whole to a temporary file and linked into place, so each of
    them sees the same complete key)."""
    path = Path(path)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-key-")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(Fernet.generate_key() + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        os.unlink(temporary)
    return path.read_bytes().strip()


def encrypt(key_file: Path, secret: str) -> str:
    return Fernet(load_key(key_file)).encrypt(secret.encode()).decode("ascii")


def decrypt(key_file: Path, stored: str) -> str:
    try:
        return Fernet(load_key(key_file)).decrypt(stored.encode("ascii")).decode()
    except (InvalidToken, ValueError) as error:
        raise CredentialError(
            f"the stored callback credential cannot be decrypted with {key_file} "
            "(was the key replaced?)"
        ) from error
