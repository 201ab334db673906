"""Users and their API tokens. A token is shown once, when it is made; the database
keeps only its SHA-256 digest (tokens are 256 random bits, so a fast digest is safe)."""

import hashlib
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Token, User

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,149}$")
USERNAME_RULE = "1-150 letters, digits or _ . @ + -, starting with a letter or digit"


class UserError(ValueError):
    """A user that cannot be made or changed as asked."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(db: Session, user: User) -> str:
    """Replace the user's token by a new one, and return it."""
    token = secrets.token_hex(32)
    for old in list(user.tokens):
        db.delete(old)
    db.flush()
    user.tokens.append(Token(digest=digest(token)))
    return token


def create_user(db: Session, username: str, is_admin: bool = False) -> tuple[User, str]:
    """A new user and its token."""
    check_username(db, username)
    user = User(username=username, is_admin=is_admin)
    db.add(user)
    return user, new_token(db, user)


def check_username(db: Session, username: str, user: User | None = None) -> None:
    # fullmatch: with match, ``$`` also accepts a trailing newline.
    if not USERNAME.fullmatch(username):
        raise UserError(f"username must be {USERNAME_RULE}")
    existing = db.scalar(select(User).where(User.username == username))
    if existing is not None and existing is not user:
        raise UserError(f"username {username!r} is taken")


def user_for_token(db: Session, token: str) -> User | None:
    return db.scalar(select(User).join(Token).where(Token.digest == digest(token)))


def find_user(db: Session, username: str) -> User:
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user named {username!r}")
    return user
