"""Users and their credentials: ``/users``, API tokens (stored hashed), the
``gr-scos users`` command line, and JWT authentication (``SCOS_AUTH=jwt``)."""

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text

from tests.api.conftest import _fresh_database, make_api

API = "/api/v1"
GR_SCOS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "gr-scos"
TOKEN = re.compile(r"^[0-9a-f]{64}$")
ISSUER = "https://auth.example"
AUDIENCE = "scos-sensor"


def token_header(token: str) -> dict:
    return {"Authorization": f"Token {token}"}


def me(api, token: str):
    return api.get(f"{API}/users/me", user=None, headers=token_header(token))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_api(request, tmp_path_factory, api_config, migrated_templates):
    """One sensor for the tests that change nothing (each checks that it did not)."""
    home = tmp_path_factory.mktemp("users")
    url = _fresh_database(request.param, home, request, migrated_templates)
    api = make_api(home, url, api_config)
    api.schedule(user="alice", is_private=True)  # so that alice may not be removed
    yield api
    api.database.dispose()


def assert_users_unchanged(api) -> None:
    listing = api.get(f"{API}/users").json
    assert {user["username"]: user["is_admin"] for user in listing["results"]} == {
        "admin": True,
        "alice": False,
        "bob": False,
    }
    for name in ("admin", "alice", "bob"):
        assert api.get(f"{API}/users/me", user=name).status_code == 200


# --- /users -----------------------------------------------------------------------


@pytest.mark.parametrize(("user", "status"), [("admin", 200), ("alice", 403), (None, 401)])
def test_list_users(shared_api, user, status):
    response = shared_api.get(f"{API}/users", user=user)
    assert response.status_code == status
    if status == 200:
        assert response.json["count"] == 3
        listed = {user["username"]: user for user in response.json["results"]}
        assert set(listed) == {"admin", "alice", "bob"}
        assert listed["admin"]["is_admin"] is True
        assert listed["alice"]["is_admin"] is False
        assert all("token" not in user for user in listed.values())


@pytest.mark.parametrize("is_admin", [False, True])
def test_admin_creates_a_user_whose_token_works_at_once(api, is_admin):
    response = api.post(f"{API}/users", {"username": "carol", "is_admin": is_admin})
    assert response.status_code == 201, response.json
    created = response.json
    assert created["username"] == "carol"
    assert created["is_admin"] is is_admin
    assert TOKEN.match(created["token"])
    assert response.headers["Location"] == created["url"]
    assert created["url"].endswith(f"/api/v1/users/{created['id']}")
    mine = me(api, created["token"])
    assert mine.status_code == 200
    assert mine.json["username"] == "carol"
    assert "token" not in mine.json
    # The token is shown once: not when the user is read again.
    assert "token" not in api.get(created["url"]).json
    listing = api.get(f"{API}/users", user=None, headers=token_header(created["token"]))
    assert listing.status_code == (200 if is_admin else 403)


@pytest.mark.parametrize(
    ("user", "body", "status", "field"),
    [
        ("alice", {"username": "carol"}, 403, None),
        ("alice", {"username": "carol", "is_admin": True}, 403, None),
        ("admin", {"username": "alice"}, 409, "username"),
        ("admin", {"username": "bad name"}, 400, "username"),
        ("admin", {"username": "-dash"}, 400, "username"),
        ("admin", {"username": ""}, 400, "username"),
        ("admin", {"username": "x" * 151}, 400, "username"),
        ("admin", {"username": "eve\n"}, 400, "username"),
        ("admin", {"username": 7}, 400, "username"),
        ("admin", {}, 400, "username"),
        ("admin", {"username": "carol", "role": "admin"}, 400, "role"),
        ("admin", {"username": "carol", "token": "abc"}, 400, "token"),
        ("admin", {"username": "carol", "is_admin": "yes"}, 400, "is_admin"),
    ],
    ids=[
        "user",
        "user-admin",
        "duplicate",
        "space",
        "leading-dash",
        "empty",
        "too-long",
        "trailing-newline",
        "not-a-string",
        "missing",
        "unknown-field",
        "read-only-field",
        "bad-is-admin",
    ],
)
def test_create_user_refused(shared_api, user, body, status, field):
    response = shared_api.post(f"{API}/users", body, user=user)
    assert response.status_code == status, response.json
    if field:
        assert field in response.json["errors"]
    assert_users_unchanged(shared_api)


def test_longest_username(api):
    name = "a" + "b" * 149
    response = api.post(f"{API}/users", {"username": name})
    assert response.status_code == 201
    assert me(api, response.json["token"]).json["username"] == name


@pytest.mark.parametrize(
    ("user", "target", "status"),
    [
        ("admin", "admin", 200),
        ("admin", "alice", 200),
        ("alice", "alice", 200),
        ("alice", "bob", 404),
        ("alice", "admin", 404),
        ("admin", None, 404),
        ("alice", None, 404),
    ],
)
def test_get_user(shared_api, user, target, status):
    target_id = shared_api.user_ids[target] if target else 9999
    response = shared_api.get(f"{API}/users/{target_id}", user=user)
    assert response.status_code == status
    if status == 200:
        assert response.json["username"] == target
        assert response.json["id"] == target_id
    else:
        assert response.json["message"] == f"no user {target_id}"


@pytest.mark.parametrize("user", ["admin", "alice"])
def test_me(shared_api, user):
    response = shared_api.get(f"{API}/users/me", user=user)
    assert response.status_code == 200
    assert response.json["username"] == user
    assert response.json["id"] == shared_api.user_ids[user]
    assert response.json["is_admin"] is (user == "admin")
    assert response.json["url"].endswith(f"/api/v1/users/{shared_api.user_ids[user]}")


# (id, user, target, body, status)
PATCHES = [
    ("admin-renames", "admin", "alice", {"username": "alicia"}, 200),
    ("user-renames-self", "alice", "alice", {"username": "alicia"}, 200),
    ("same-name", "alice", "alice", {"username": "alice"}, 200),
    ("nothing", "alice", "alice", {}, 200),
    ("unchanged-is-admin", "alice", "alice", {"is_admin": False}, 200),
    ("admin-promotes", "admin", "alice", {"is_admin": True}, 200),
    ("user-renames-other", "alice", "bob", {"username": "robert"}, 404),
    ("user-demotes-admin", "alice", "admin", {"is_admin": False}, 404),
    ("user-promotes-self", "alice", "alice", {"is_admin": True}, 403),
    ("user-promotes-and-renames-self", "alice", "alice", {"is_admin": True, "username": "al"}, 403),
    ("last-admin-demoted", "admin", "admin", {"is_admin": False}, 409),
    ("duplicate-by-admin", "admin", "alice", {"username": "bob"}, 409),
    ("duplicate-by-user", "alice", "alice", {"username": "admin"}, 409),
    ("bad-name", "admin", "alice", {"username": "bad name"}, 400),
    ("trailing-newline", "admin", "alice", {"username": "alicia\n"}, 400),
    ("empty-name", "alice", "alice", {"username": ""}, 400),
    ("read-only", "admin", "alice", {"id": 5}, 400),
    ("unknown-field", "admin", "alice", {"password": "x"}, 400),
    ("not-an-object", "admin", "alice", [], 400),
]


def _patch(api, user, target, body, status) -> None:
    url = f"{API}/users/{api.user_ids[target]}"
    before = api.get(url).json
    response = api.patch(url, body, user=user)
    assert response.status_code == status, response.json
    after = api.get(url).json
    if status == 200:
        assert response.json == after
        assert after == before | body
    else:
        assert after == before
    if status == 400:
        assert response.json["errors"]


@pytest.mark.parametrize(
    ("user", "target", "body", "status"),
    [case[1:] for case in PATCHES if case[4] == 200],
    ids=[case[0] for case in PATCHES if case[4] == 200],
)
def test_patch_user(api, user, target, body, status):
    _patch(api, user, target, body, status)


@pytest.mark.parametrize(
    ("user", "target", "body", "status"),
    [case[1:] for case in PATCHES if case[4] != 200],
    ids=[case[0] for case in PATCHES if case[4] != 200],
)
def test_patch_user_refused(shared_api, user, target, body, status):
    _patch(shared_api, user, target, body, status)
    assert_users_unchanged(shared_api)


def test_admin_demotes_itself_when_another_admin_remains(api):
    api.patch(f"{API}/users/{api.user_ids['alice']}", {"is_admin": True})
    response = api.patch(f"{API}/users/{api.user_ids['admin']}", {"is_admin": False})
    assert response.status_code == 200
    assert api.get(f"{API}/users").status_code == 403
    assert api.get(f"{API}/users", user="alice").status_code == 200
    # Now alice is the last admin.
    last = api.patch(f"{API}/users/{api.user_ids['alice']}", {"is_admin": False}, user="alice")
    assert last.status_code == 409


def test_renamed_owner_shows_on_its_entries(api):
    entry = api.schedule(user="alice")
    api.patch(f"{API}/users/{api.user_ids['alice']}", {"username": "alicia"}, user="alice")
    assert api.get(f"{API}/schedule/{entry['id']}").json["owner"] == "alicia"


def test_delete_user_revokes_its_token(api):
    response = api.delete(f"{API}/users/{api.user_ids['bob']}")
    assert response.status_code == 204
    assert response.data == b""
    assert api.get(f"{API}/users/me", user="bob").status_code == 401
    assert api.get(f"{API}/users/{api.user_ids['bob']}").status_code == 404
    assert api.delete(f"{API}/users/{api.user_ids['bob']}").status_code == 404
    with api.database.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT count(*) FROM tokens WHERE user_id = :id"), {"id": api.user_ids["bob"]}
        ).scalar()
    assert rows == 0
    # A new user (which may get bob's id back) does not inherit bob's token.
    carol = api.post(f"{API}/users", {"username": "carol"}).json
    assert me(api, carol["token"]).json["username"] == "carol"
    assert api.get(f"{API}/users/me", user="bob").status_code == 401


@pytest.mark.parametrize(
    ("user", "target", "status"),
    [
        ("alice", "bob", 403),
        ("alice", "alice", 403),
        ("alice", "admin", 403),
        ("admin", "admin", 409),
        ("admin", None, 404),
    ],
    ids=["user-deletes-other", "user-deletes-self", "user-deletes-admin", "last-admin", "unknown"],
)
def test_delete_user_refused(shared_api, user, target, status):
    target_id = shared_api.user_ids[target] if target else 9999
    response = shared_api.delete(f"{API}/users/{target_id}", user=user)
    assert response.status_code == status
    assert_users_unchanged(shared_api)


def test_delete_user_owning_entries_is_409(api):
    entry = api.schedule(user="alice", is_private=True)
    response = api.delete(f"{API}/users/{api.user_ids['alice']}")
    assert response.status_code == 409
    assert "owns 1 schedule entries" in response.json["message"]
    assert api.get(f"{API}/users/me", user="alice").status_code == 200
    assert api.delete(f"{API}/schedule/{entry['id']}", user="alice").status_code == 204
    assert api.delete(f"{API}/users/{api.user_ids['alice']}").status_code == 204


def test_delete_an_admin_when_another_remains(api):
    api.patch(f"{API}/users/{api.user_ids['alice']}", {"is_admin": True})
    assert api.delete(f"{API}/users/{api.user_ids['admin']}", user="alice").status_code == 204
    assert api.get(f"{API}/users/me").status_code == 401
    assert api.delete(f"{API}/users/{api.user_ids['alice']}", user="alice").status_code == 409


# --- tokens ---------------------------------------------------------------------------


def test_rotate_my_token(api):
    old = api.tokens["alice"]
    response = api.post(f"{API}/users/me/token", user="alice")
    assert response.status_code == 200
    new = response.json["token"]
    assert TOKEN.match(new) and new != old
    assert response.json["username"] == "alice"
    assert me(api, old).status_code == 401
    assert me(api, new).status_code == 200
    assert me(api, new).json["username"] == "alice"
    # Others are untouched.
    assert api.get(f"{API}/users/me", user="bob").status_code == 200


@pytest.mark.parametrize(("user", "target"), [("admin", "alice"), ("alice", "alice")])
def test_rotate_a_users_token(api, user, target):
    old = api.tokens[target]
    response = api.post(f"{API}/users/{api.user_ids[target]}/token", user=user)
    assert response.status_code == 200
    assert response.json["username"] == target
    assert me(api, old).status_code == 401
    assert me(api, response.json["token"]).json["username"] == target
    assert api.get(f"{API}/users/me", user="admin").status_code == 200


@pytest.mark.parametrize(
    ("user", "target"), [("alice", "bob"), ("bob", "admin"), ("admin", None), ("alice", None)]
)
def test_rotate_a_users_token_refused(shared_api, user, target):
    target_id = shared_api.user_ids[target] if target else 9999
    response = shared_api.post(f"{API}/users/{target_id}/token", user=user)
    assert response.status_code == 404
    assert "token" not in response.json
    assert_users_unchanged(shared_api)


def _token_rows(api) -> list[tuple]:
    with api.database.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT * FROM tokens"))]


def test_tokens_are_stored_hashed(api):
    created = api.post(f"{API}/users", {"username": "carol"}).json["token"]
    rotated = api.post(f"{API}/users/me/token", user="alice").json["token"]
    rows = _token_rows(api)
    stored = " ".join(str(value) for row in rows for value in row)
    with api.database.engine.connect() as connection:
        digests = {row[0] for row in connection.execute(text("SELECT digest FROM tokens"))}
    for token in [*api.tokens.values(), created, rotated]:
        assert token not in stored
    for token in [api.tokens["admin"], api.tokens["bob"], created, rotated]:
        assert hashlib.sha256(token.encode()).hexdigest() in digests
    assert hashlib.sha256(api.tokens["alice"].encode()).hexdigest() not in digests
    # One token per user: rotating replaces it.
    assert len(rows) == 4


# --- the command line -----------------------------------------------------------------


def gr_scos(home: Path, database_url: str, *arguments: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SCOS_")}
    env |= {"SCOS_HOME": str(home), "SCOS_DATABASE_URL": database_url}
    return subprocess.run(
        [str(GR_SCOS), "users", *arguments], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_users(tmp_path, database_url, api_config):
    home = tmp_path / "cli"
    added = gr_scos(home, database_url, "add", "carol")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("created user carol")
    carol = added.stdout.splitlines()[-1]
    assert TOKEN.match(carol)
    boss = gr_scos(home, database_url, "add", "boss", "--admin")
    assert boss.returncode == 0, boss.stderr
    assert boss.stdout.startswith("created admin boss")
    boss = boss.stdout.splitlines()[-1]

    api = make_api(tmp_path, database_url, api_config)
    try:
        mine = me(api, carol)
        assert mine.status_code == 200
        assert (mine.json["username"], mine.json["is_admin"]) == ("carol", False)
        assert api.get(f"{API}/users", user=None, headers=token_header(carol)).status_code == 403
        assert api.get(f"{API}/users", user=None, headers=token_header(boss)).status_code == 200

        listed = gr_scos(home, database_url, "list")
        assert listed.returncode == 0
        rows = [line.split() for line in listed.stdout.splitlines()]
        assert [row[1:] for row in rows] == [
            ["user", "carol"],
            ["admin", "boss"],
            ["admin", "admin"],
            ["user", "alice"],
            ["user", "bob"],
        ]
        assert [int(row[0]) for row in rows] == sorted(int(row[0]) for row in rows)

        rotated = gr_scos(home, database_url, "rotate", "carol")
        assert rotated.returncode == 0, rotated.stderr
        new = rotated.stdout.splitlines()[-1]
        assert TOKEN.match(new) and new != carol
        assert me(api, carol).status_code == 401
        assert me(api, new).json["username"] == "carol"

        removed = gr_scos(home, database_url, "remove", "carol")
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.strip() == "removed carol"
        assert me(api, new).status_code == 401
        listing = api.get(f"{API}/users", user=None, headers=token_header(boss)).json
        assert [user["username"] for user in listing["results"]] == [
            "boss",
            "admin",
            "alice",
            "bob",
        ]
    finally:
        api.database.dispose()


CLI_ERRORS = [
    ("duplicate", ["add", "alice"], "username 'alice' is taken"),
    ("bad-name", ["add", "bad name"], "username must be"),
    ("unknown-user", ["rotate", "nobody"], "no user named 'nobody'"),
    ("owner", ["remove", "alice"], "alice owns 1 schedule entries"),
]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [case[1:] for case in CLI_ERRORS],
    ids=[case[0] for case in CLI_ERRORS],
)
def test_cli_users_errors(shared_api, tmp_path, arguments, reason):
    result = gr_scos(tmp_path / "cli", shared_api.settings.database_url, *arguments)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("gr-scos users: error: ")
    assert reason in result.stderr
    assert_users_unchanged(shared_api)


# --- JWT authentication -----------------------------------------------------------------


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict:
    """The issuer's RSA key (its public half in a PEM file) and a stranger's."""
    issuer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = issuer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path_factory.mktemp("jwt") / "issuer.pem"
    path.write_bytes(public)
    return {"issuer": issuer, "stranger": stranger, "public_pem": public, "path": path}


def _jwt_api(home: Path, database_url: str, api_config: Path, keys: dict):
    return make_api(
        home,
        database_url,
        api_config,
        auth="jwt",
        jwt_public_key=keys["path"],
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )


@pytest.fixture
def jwt_api(tmp_path, database_url, api_config, signing_keys):
    api = _jwt_api(tmp_path, database_url, api_config, signing_keys)
    yield api
    api.database.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_jwt_api(request, tmp_path_factory, api_config, migrated_templates, signing_keys):
    """A JWT sensor for the tests that are refused: none may create a user."""
    home = tmp_path_factory.mktemp("jwt")
    url = _fresh_database(request.param, home, request, migrated_templates)
    api = _jwt_api(home, url, api_config, signing_keys)
    yield api
    api.database.dispose()


def claims(name: str = "alice", roles=("ROLE_MANAGER",), **changes) -> dict:
    now = int(time.time())
    values = {
        "sub": f"{name}-subject",
        "user_name": name,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "authorities": list(roles) if not isinstance(roles, str) else roles,
    }
    values.update(changes)
    return {key: value for key, value in values.items() if value is not None}


def sign(keys: dict, payload: dict, key: str = "issuer") -> str:
    return jwt.encode(payload, keys[key], algorithm="RS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict, algorithm: str, secret: bytes = b"") -> str:
    """A JWT with ``algorithm`` (HS256 keyed with ``secret``, or none)."""
    header = _b64(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    if algorithm == "none":
        return f"{header}.{body}."
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def bearer(api, url: str, token: str, method: str = "GET", **kwargs):
    headers = {"Authorization": f"Bearer {token}"}
    return api.call(method, url, user=None, headers=headers, **kwargs)


def stored_users(api) -> dict[str, bool]:
    with api.database.engine.connect() as connection:
        rows = connection.execute(text("SELECT username, is_admin FROM users"))
        return {name: bool(admin) for name, admin in rows}


def test_jwt_creates_the_user(jwt_api, signing_keys):
    response = bearer(jwt_api, f"{API}/users/me", sign(signing_keys, claims("alice")))
    assert response.status_code == 200, response.json
    assert response.json["username"] == "alice"
    assert response.json["is_admin"] is False
    assert stored_users(jwt_api) == {"alice": False}
    # The same user on the next request, not a new one.
    again = bearer(jwt_api, f"{API}/users/me", sign(signing_keys, claims("alice")))
    assert again.json["id"] == response.json["id"]
    assert len(stored_users(jwt_api)) == 1


def test_jwt_without_user_name_uses_sub(jwt_api, signing_keys):
    token = sign(signing_keys, claims(user_name=None, sub="service-account"))
    response = bearer(jwt_api, f"{API}/users/me", token)
    assert response.status_code == 200
    assert response.json["username"] == "service-account"


def test_jwt_audience_may_be_a_list(jwt_api, signing_keys):
    token = sign(signing_keys, claims(aud=["other", AUDIENCE]))
    assert bearer(jwt_api, f"{API}/users/me", token).status_code == 200


def _bad_tokens(keys: dict) -> dict[str, str]:
    now = int(time.time())
    valid = claims()
    tampered = sign(keys, valid).split(".")
    tampered[1] = _b64(json.dumps(claims(roles=["ROLE_MANAGER", "ROLE_ADMIN"])).encode())
    return {
        "expired": sign(keys, claims(exp=now - 120, iat=now - 600)),
        "wrong-issuer": sign(keys, claims(iss="https://evil.example")),
        "no-issuer": sign(keys, claims(iss=None)),
        "wrong-audience": sign(keys, claims(aud="another-sensor")),
        "no-audience": sign(keys, claims(aud=None)),
        "other-key": sign(keys, valid, key="stranger"),
        "hs256-with-public-key": unsigned(valid, "HS256", keys["public_pem"]),
        "hs256": unsigned(valid, "HS256", b"secret"),
        "alg-none": unsigned(valid, "none"),
        "no-exp": sign(keys, claims(exp=None)),
        "no-sub": sign(keys, claims(sub=None)),
        "not-yet-valid": sign(keys, claims(nbf=now + 600)),
        "tampered": ".".join(tampered),
        "garbage": "not.a.jwt",
        "empty": "",
    }


BAD_TOKEN_CASES = [
    "expired",
    "wrong-issuer",
    "no-issuer",
    "wrong-audience",
    "no-audience",
    "other-key",
    "hs256-with-public-key",
    "hs256",
    "alg-none",
    "no-exp",
    "no-sub",
    "not-yet-valid",
    "tampered",
    "garbage",
    "empty",
]


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
def test_bad_jwt_is_401(shared_jwt_api, signing_keys, case):
    token = _bad_tokens(signing_keys)[case]
    response = bearer(shared_jwt_api, f"{API}/users/me", token)
    assert response.status_code == 401, response.json
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored_users(shared_jwt_api) == {}


@pytest.mark.parametrize(
    "header",
    ["Token xyz", "Token " + "0" * 64, "Basic YWxpY2U6eA==", "Bearer", "JWT x.y.z"],
    ids=["token", "token-hex", "basic", "bearer-only", "other-scheme"],
)
def test_other_schemes_are_401_in_jwt_mode(shared_jwt_api, header):
    response = shared_jwt_api.get(f"{API}/users/me", user=None, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_endpoint_needs_a_jwt(shared_jwt_api, signing_keys):
    spec = shared_jwt_api.get(f"{API}/swagger.json", user=None).json
    assert spec["security"] == [{"jwt": []}]
    assert shared_jwt_api.get(f"{API}/docs", user=None).status_code == 200
    refused = []
    for path, item in spec["paths"].items():
        url = API + path.format(schedule_id="x", task_id=1, user_id=1)
        for method in item:
            if method == "parameters":
                continue
            for headers in ({}, {"Authorization": "Token x"}, {"Authorization": "Bearer x"}):
                response = shared_jwt_api.call(
                    method.upper(), url, user=None, headers=headers, json={}
                )
                if response.status_code != 401 or "WWW-Authenticate" not in response.headers:
                    refused.append((method, path, headers, response.status_code))
    assert refused == []


@pytest.mark.parametrize(
    "roles",
    [[], ["ROLE_USER"], ["ROLE_ADMIN"], "ROLE_MANAGERS", ["role_manager"], 5, {"x": 1}, None],
    ids=["none", "other", "admin-only", "prefix", "lower-case", "number", "object", "null"],
)
def test_jwt_without_the_required_role_is_403(shared_jwt_api, signing_keys, roles):
    payload = claims(roles=())
    payload["authorities"] = roles
    response = bearer(shared_jwt_api, f"{API}/users/me", sign(signing_keys, payload))
    assert response.status_code == 403, response.json
    assert "ROLE_MANAGER" in response.json["message"]
    assert stored_users(shared_jwt_api) == {}


def test_jwt_role_in_another_claim_is_403(shared_jwt_api, signing_keys):
    payload = claims()
    payload["roles"] = payload.pop("authorities")
    assert bearer(shared_jwt_api, f"{API}/users/me", sign(signing_keys, payload)).status_code == 403


@pytest.mark.parametrize(
    ("roles", "admin"),
    [
        (["ROLE_MANAGER"], False),
        (["ROLE_MANAGER", "ROLE_ADMIN"], True),
        ("ROLE_MANAGER", False),
        ("ROLE_MANAGER ROLE_ADMIN", True),
        ("  ROLE_ADMIN   ROLE_MANAGER ", True),
    ],
    ids=["list", "list-admin", "string", "string-admin", "string-spaces"],
)
def test_jwt_roles(jwt_api, signing_keys, roles, admin):
    token = sign(signing_keys, claims("carol", roles=roles))
    response = bearer(jwt_api, f"{API}/users/me", token)
    assert response.status_code == 200
    assert response.json["is_admin"] is admin
    assert bearer(jwt_api, f"{API}/users", token).status_code == (200 if admin else 403)


def test_jwt_admin_role_follows_the_token(jwt_api, signing_keys):
    admin = sign(signing_keys, claims("carol", roles=["ROLE_MANAGER", "ROLE_ADMIN"]))
    plain = sign(signing_keys, claims("carol"))
    listing = bearer(jwt_api, f"{API}/users", admin)
    assert listing.status_code == 200
    assert [user["username"] for user in listing.json["results"]] == ["carol"]
    assert bearer(jwt_api, f"{API}/users", plain).status_code == 403
    assert bearer(jwt_api, f"{API}/users/me", plain).json["is_admin"] is False
    assert stored_users(jwt_api) == {"carol": False}
    assert bearer(jwt_api, f"{API}/users", admin).status_code == 200
    assert stored_users(jwt_api) == {"carol": True}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/users", {"username": "dave"}),
        ("POST", "/users/me/token", None),
        ("POST", "/users/{me}/token", None),
    ],
    ids=["create-user", "rotate-mine", "rotate-by-id"],
)
@pytest.mark.parametrize("admin", [True, False], ids=["admin", "user"])
def test_no_api_tokens_in_jwt_mode(jwt_api, signing_keys, method, path, body, admin):
    roles = ["ROLE_MANAGER", "ROLE_ADMIN"] if admin else ["ROLE_MANAGER"]
    token = sign(signing_keys, claims("carol", roles=roles))
    mine = bearer(jwt_api, f"{API}/users/me", token).json["id"]
    response = bearer(jwt_api, API + path.format(me=mine), token, method=method, json=body)
    expected = 403 if path == "/users" and not admin else 409
    assert response.status_code == expected, response.json
    assert "token" not in response.json
    assert set(stored_users(jwt_api)) == {"carol"}
    with jwt_api.database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM tokens")).scalar() == 0


def test_jwt_users_own_their_entries(jwt_api, signing_keys):
    alice = sign(signing_keys, claims("alice"))
    bob = sign(signing_keys, claims("bob"))
    boss = sign(signing_keys, claims("boss", roles=["ROLE_MANAGER", "ROLE_ADMIN"]))
    created = bearer(
        jwt_api,
        f"{API}/schedule",
        alice,
        method="POST",
        json={"name": "alice entry", "action": "acquire_iq"},
    )
    assert created.status_code == 201, created.json
    assert created.json["owner"] == "alice"
    private = bearer(
        jwt_api,
        f"{API}/schedule",
        alice,
        method="POST",
        json={"name": "alice secret", "action": "acquire_iq", "is_private": True},
    ).json
    url = f"{API}/schedule/{created.json['id']}"
    assert bearer(jwt_api, url, bob).status_code == 200
    assert bearer(jwt_api, url, bob, method="PATCH", json={"name": "b"}).status_code == 403
    assert bearer(jwt_api, url, bob, method="DELETE").status_code == 403
    assert bearer(jwt_api, f"{API}/schedule/{private['id']}", bob).status_code == 404
    assert bearer(jwt_api, f"{API}/schedule", bob).json["count"] == 1
    assert bearer(jwt_api, f"{API}/schedule", alice).json["count"] == 2
    assert bearer(jwt_api, f"{API}/schedule", boss).json["count"] == 2
    assert bearer(jwt_api, url, alice, method="PATCH", json={"name": "a"}).status_code == 200
    renamed = bearer(jwt_api, url, boss, method="PATCH", json={"name": "boss says"})
    assert renamed.status_code == 200
    assert renamed.json["owner"] == "alice"
    assert bearer(jwt_api, url, alice, method="DELETE").status_code == 204
