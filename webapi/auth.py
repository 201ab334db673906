"""Who is asking: ``Authorization: Token <key>`` (default) or, with ``SCOS_AUTH=jwt``,
``Authorization: Bearer <JWT>`` signed RS256 by the configured key.

A JWT must be unexpired, carry ``sub`` (``user_name`` is preferred for the name, as
OAuth2 servers of the Spring family send it), match the configured issuer and
audience when those are set, and list the required role in the role claim. Its
user is created on first sight, and is an admin while the token lists the admin
role. Missing or bad credentials are 401; a JWT without the required role is 403.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import jwt
from flask import g, request
from flask_restx import Resource, abort
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from ..storage import users
from ..storage.models import USERNAME_LENGTH, User
from .availability import answers_503_while_unreachable
from .common import sensor_app, session

SECURITY = {
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": (
            "`Token <key>`: the word Token, a space and your key "
            "(gr-scos users add NAME prints a key)"
        ),
    },
    "jwt": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Bearer <JWT>` from the configured OAuth2 server",
    },
}


def _unauthorized(reason: str, scheme: str) -> None:
    error = Unauthorized(reason, www_authenticate=WWWAuthenticate(scheme))
    error.data = {"message": reason, "errors": {"Authorization": reason}}
    raise error


def _token_user(credentials: str) -> User:
    scheme, _, key = credentials.partition(" ")
    # Authentication schemes are case-insensitive (RFC 9110, 11.1).
    if scheme.lower() != "token" or not key.strip():
        _unauthorized("expected 'Authorization: Token <key>'", "Token")
    user = users.user_for_token(session(), key.strip())
    if user is None:
        _unauthorized("invalid token", "Token")
    g.auth_token = key.strip()  # sent back to a callback_url the request sets
    return user


@functools.cache
def _public_key(path: Path) -> bytes:
    return path.read_bytes()


def _jwt_user(credentials: str) -> User:
    settings = sensor_app().settings
    scheme, _, token = credentials.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        _unauthorized("expected 'Authorization: Bearer <JWT>'", "Bearer")
    try:
        claims = jwt.decode(
            token.strip(),
            _public_key(settings.jwt_public_key),
            algorithms=["RS256"],
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            options={
                "require": ["exp", "sub"],
                "verify_aud": settings.jwt_audience is not None,
                "verify_iss": settings.jwt_issuer is not None,
            },
        )
    except jwt.PyJWTError as error:
        _unauthorized(f"invalid JWT: {error}", "Bearer")
    roles = claims.get(settings.jwt_role_claim) or []
    if isinstance(roles, str):
        roles = roles.split()
    elif not isinstance(roles, list):
        roles = []  # a number or an object lists no roles
    if settings.jwt_required_role not in roles:
        abort(
            403,
            f"the JWT lacks the role {settings.jwt_required_role}",
            errors={
                "Authorization": f"{settings.jwt_role_claim} lacks {settings.jwt_required_role}"
            },
        )
    username = str(claims.get("user_name") or claims["sub"])
    if len(username) > USERNAME_LENGTH:
        _unauthorized(f"the JWT's user name is longer than {USERNAME_LENGTH} characters", "Bearer")
    db = session()
    is_admin = settings.jwt_admin_role in roles
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        try:
            user = User(username=username, is_admin=is_admin)
            db.add(user)
            db.commit()
        except IntegrityError:
            # Another request made the same user first.
            db.rollback()
            user = db.scalar(select(User).where(User.username == username))
    if user.is_admin != is_admin:
        user.is_admin = is_admin
        db.commit()
    return user


def authenticated(method: Callable) -> Callable:
    """Run ``method`` with ``g.user`` set, or answer 401."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        credentials = request.headers.get("Authorization", "").strip()
        if not credentials:
            scheme = "Bearer" if sensor_app().settings.auth == "jwt" else "Token"
            _unauthorized("authentication required", scheme)
        if sensor_app().settings.auth == "jwt":
            g.user = _jwt_user(credentials)
        else:
            g.user = _token_user(credentials)
        return method(*args, **kwargs)

    return wrapper


def current_user() -> User:
    return g.user


def require_admin() -> None:
    if not g.user.is_admin:
        abort(403, "only an admin may do this")


class AuthenticatedResource(Resource):
    """A resource whose every method needs an authenticated user, and answers 503
    while the database (which holds the users) is unreachable."""

    # The last decorator is the outermost: the 503 covers authentication too.
    method_decorators: ClassVar[list] = [authenticated, answers_503_while_unreachable]
