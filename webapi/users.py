"""``/users``: accounts and their API tokens.

Admins list, create, change and delete users and rotate anyone's token; a user
sees and renames itself and rotates its own token (others answer 404). A token is
shown once, in the response that makes it. With JWT authentication users come from
the tokens and API tokens do not exist, so creating users and rotating tokens
answer 409.
"""

from flask import g
from flask_restx import Namespace, abort, fields
from sqlalchemy import func, select

from ..storage import users
from ..storage.models import ScheduleEntry, User
from .auth import AuthenticatedResource, require_admin
from .common import (
    UTCDateTime,
    bad_request,
    error_model,
    link,
    page_model,
    page_parser,
    paginate,
    sensor_app,
    session,
    strict_model,
    validate_payload,
)

ns = Namespace("users", description="Users and API tokens", path="/users")
error = error_model(ns)


def _username(required: bool) -> fields.String:
    return fields.String(
        required=required,
        min_length=1,
        max_length=150,
        pattern=users.USERNAME.pattern,
        description=users.USERNAME_RULE,
    )


user_model = ns.model(
    "User",
    {
        "id": fields.Integer(required=True),
        "username": fields.String(required=True),
        "is_admin": fields.Boolean(required=True),
        "created": UTCDateTime(required=True),
        "url": fields.String(required=True),
    },
)
user_with_token = ns.inherit(
    "UserWithToken",
    user_model,
    {"token": fields.String(required=True, description="the API token; shown only now")},
)
user_create = strict_model(
    ns,
    "UserCreate",
    {"username": _username(required=True), "is_admin": fields.Boolean(default=False)},
    read_only=("id", "created", "url", "token"),
)
user_update = strict_model(
    ns,
    "UserUpdate",
    {
        "username": _username(required=False),
        "is_admin": fields.Boolean(description="only an admin may set it"),
    },
    read_only=("id", "created", "url", "token"),
)
users_page = page_model(ns, "UserList", user_model)
paging = page_parser()


def render_user(user: User, token: str | None = None) -> dict:
    rendered = {
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "created": user.created,
        "url": link("user", user_id=user.id),
    }
    if token is not None:
        rendered["token"] = token
    return rendered


def _no_tokens_with_jwt() -> None:
    if sensor_app().settings.auth == "jwt":
        abort(409, "the sensor authenticates with JWTs (SCOS_AUTH=jwt): it has no API tokens")


def _get_user(user_id: int) -> User:
    user = session().get(User, user_id)
    if user is None or not (g.user.is_admin or user.id == g.user.id):
        abort(404, f"no user {user_id}")
    return user


@ns.route("", endpoint="users")
@ns.response(401, "No or bad credentials", error)
@ns.response(403, "Not an admin", error)
class Users(AuthenticatedResource):
    @ns.doc("list_users")
    @ns.expect(paging)
    @ns.response(400, "Bad query parameter", error)
    @ns.marshal_with(users_page, skip_none=True, description="All users")
    def get(self):
        """All users (admins only)."""
        require_admin()
        query = select(User).order_by(User.id)
        return paginate(query, paging.parse_args(), render_user)

    @ns.doc("create_user")
    @ns.expect(user_create)
    @ns.response(400, "Invalid user", error)
    @ns.response(409, "The username is taken, or the sensor uses JWTs", error)
    @ns.marshal_with(user_with_token, code=201, description="Created, with its token")
    def post(self):
        """Create a user (admins only); the response holds its token."""
        require_admin()
        _no_tokens_with_jwt()
        payload = validate_payload(user_create)
        db = session()
        try:
            user, token = users.create_user(db, payload["username"], payload.get("is_admin", False))
        except users.UserError as problem:
            bad_request("username", str(problem), 409 if "taken" in str(problem) else 400)
        db.commit()
        return render_user(user, token), 201, {"Location": link("user", user_id=user.id)}


@ns.route("/<int(max=2147483647):user_id>", endpoint="user")
@ns.param("user_id", "the user's id")
@ns.response(401, "No or bad credentials", error)
@ns.response(404, "No such user (or not the caller, for a non-admin)", error)
class UserResource(AuthenticatedResource):
    @ns.doc("get_user")
    @ns.marshal_with(user_model)
    def get(self, user_id: int):
        """One user."""
        return render_user(_get_user(user_id))

    @ns.doc("update_user")
    @ns.expect(user_update)
    @ns.response(400, "Invalid change", error)
    @ns.response(403, "Only an admin may change is_admin", error)
    @ns.response(409, "The username is taken, or the last admin would be lost", error)
    @ns.marshal_with(user_model)
    def patch(self, user_id: int):
        """Rename a user or change its admin right."""
        user = _get_user(user_id)
        payload = validate_payload(user_update, partial=True)
        db = session()
        if "is_admin" in payload and payload["is_admin"] != user.is_admin:
            require_admin()
            if not payload["is_admin"]:
                _keep_an_admin(user)
            user.is_admin = payload["is_admin"]
        if "username" in payload:
            try:
                users.check_username(db, payload["username"], user)
            except users.UserError as problem:
                bad_request("username", str(problem), 409 if "taken" in str(problem) else 400)
            user.username = payload["username"]
        db.commit()
        return render_user(user)

    @ns.doc("delete_user")
    @ns.response(204, "Deleted")
    @ns.response(403, "Not an admin", error)
    @ns.response(409, "The user owns schedule entries, or is the last admin", error)
    def delete(self, user_id: int):
        """Delete a user that owns no schedule entries (admins only)."""
        require_admin()
        user = _get_user(user_id)
        db = session()
        owned = db.scalar(select(func.count()).where(ScheduleEntry.owner_id == user.id))
        if owned:
            abort(409, f"{user.username} owns {owned} schedule entries: delete them first")
        if user.is_admin:
            _keep_an_admin(user)
        db.delete(user)
        db.commit()
        return "", 204


def _keep_an_admin(user: User) -> None:
    admins = session().scalar(select(func.count()).where(User.is_admin.is_(True)))
    if admins <= 1:
        abort(409, f"{user.username} is the last admin")


@ns.route("/me", endpoint="me")
@ns.response(401, "No or bad credentials", error)
class Me(AuthenticatedResource):
    @ns.doc("get_me")
    @ns.marshal_with(user_model)
    def get(self):
        """The authenticated user."""
        return render_user(g.user)


def _rotate(user: User) -> dict:
    _no_tokens_with_jwt()
    db = session()
    token = users.new_token(db, user)
    db.commit()
    return render_user(user, token)


@ns.route("/me/token", endpoint="my_token")
@ns.response(401, "No or bad credentials", error)
@ns.response(409, "The sensor uses JWTs", error)
class MyToken(AuthenticatedResource):
    @ns.doc("rotate_my_token")
    @ns.marshal_with(user_with_token, description="The new token; the old one no longer works")
    def post(self):
        """Replace the caller's token."""
        return _rotate(g.user)


@ns.route("/<int(max=2147483647):user_id>/token", endpoint="user_token")
@ns.param("user_id", "the user's id")
@ns.response(401, "No or bad credentials", error)
@ns.response(404, "No such user (or not the caller, for a non-admin)", error)
@ns.response(409, "The sensor uses JWTs", error)
class UserToken(AuthenticatedResource):
    @ns.doc("rotate_user_token")
    @ns.marshal_with(user_with_token, description="The new token; the old one no longer works")
    def post(self, user_id: int):
        """Replace a user's token."""
        return _rotate(_get_user(user_id))
