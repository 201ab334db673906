"""Settings of a running sensor (API and scheduler), from the environment.

=========================  ==============================================  ====================
variable                   meaning                                         default
=========================  ==============================================  ====================
``SCOS_HOME``              the sensor's state: database, data, sockets      ``./var``
``SCOS_DATABASE_URL``      SQLAlchemy URL (``postgresql+psycopg://...``)    SQLite in SCOS_HOME
``SCOS_DATA_DIR``          where recordings are written                     ``SCOS_HOME/data``
``SCOS_MAX_DISK_USAGE``    percent of the data filesystem the sensor may    ``85``
                           fill before it deletes the oldest acquisitions
``SCOS_AUTH``              ``token`` or ``jwt``                             ``token``
``SCOS_JWT_PUBLIC_KEY``    PEM file of the RS256 key that signs the JWTs    (required for jwt)
``SCOS_JWT_ISSUER``        required ``iss`` claim                           (not checked)
``SCOS_JWT_AUDIENCE``      required ``aud`` claim                           (not checked)
``SCOS_JWT_ROLE_CLAIM``    claim holding the user's roles (list or string)  ``authorities``
``SCOS_JWT_REQUIRED_ROLE`` role a JWT must carry to use the API             ``ROLE_MANAGER``
``SCOS_JWT_ADMIN_ROLE``    role that makes a JWT user an admin              ``ROLE_ADMIN``
``SCOS_CONFIG``            configuration directory (``grscos.config``)      shipped defaults
``SCOS_CALLBACK_AUTH``     how acquisition notifications authenticate to    ``token``
                           an entry's ``callback_url``: ``token`` (the
                           token that set the URL, kept encrypted with
                           ``SCOS_HOME/secret.key``) or ``oauth``
                           (client credentials; always with SCOS_AUTH=jwt)
``SCOS_OAUTH_TOKEN_URL``   OAuth2 token endpoint (client credentials        (required for oauth)
                           grant) for notifications
``SCOS_OAUTH_CLIENT_ID``   the sensor's OAuth2 client id                    (required for oauth)
``SCOS_OAUTH_CLIENT_SECRET``
                           the sensor's OAuth2 client secret                (required for oauth)
``SCOS_MANAGER_URL``       the manager's API (``https://host/api/v1``): the  (no association)
                           sensor associates with it at start-up (Table 1)
``SCOS_MANAGER_TOKEN``     ``Authorization: Token`` for the manager, when    (none)
                           no OAuth2 client is configured
``SCOS_CALLBACK_VERIFY``   TLS verification of callback, token and          ``true``
                           manager URLs:
                           ``true``, ``false`` or a CA bundle file (or
                           directory)
``SCOS_CALLBACK_RETRIES``  delivery attempts of a notification before it    ``10``
                           is ``failed``
=========================  ==============================================  ====================

With SCOS_AUTH=jwt and no OAuth2 client configured, notifications are sent without
credentials.

Every value is checked when the settings are loaded; a bad one is a
:class:`SettingsError` that names the variable.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

AUTH_MODES = ("token", "jwt")
CALLBACK_AUTH_MODES = ("token", "oauth")
OAUTH_VARIABLES = ("SCOS_OAUTH_TOKEN_URL", "SCOS_OAUTH_CLIENT_ID", "SCOS_OAUTH_CLIENT_SECRET")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the reason."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    data_dir: Path
    max_disk_usage: float = 85.0
    auth: str = "token"
    jwt_public_key: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_role_claim: str = "authorities"
    jwt_required_role: str = "ROLE_MANAGER"
    jwt_admin_role: str = "ROLE_ADMIN"
    config_dir: Path | None = None
    callback_auth: str = "token"
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    callback_verify: bool | Path = True
    callback_retries: int = 10
    manager_url: str | None = None
    manager_token: str | None = field(default=None, repr=False)

    @property
    def secret_key_file(self) -> Path:
        """The Fernet key that encrypts the stored callback credentials."""
        return self.home / "secret.key"

    @property
    def callback_oauth(self) -> bool:
        """Whether notifications authenticate with OAuth2 client credentials."""
        return self.callback_auth == "oauth" or self.auth == "jwt"

    @property
    def oauth_configured(self) -> bool:
        return bool(self.oauth_token_url and self.oauth_client_id and self.oauth_client_secret)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        home = Path(get("SCOS_HOME") or "var").resolve()
        data_dir = Path(get("SCOS_DATA_DIR") or home / "data").resolve()
        database_url = get("SCOS_DATABASE_URL") or f"sqlite:///{home / 'scos.sqlite3'}"
        if not database_url.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise SettingsError(
                f"SCOS_DATABASE_URL: must be a sqlite:/// or postgresql+psycopg:// URL, "
                f"got {database_url!r}"
            )
        try:
            max_disk_usage = float(get("SCOS_MAX_DISK_USAGE") or 85)
        except ValueError:
            raise SettingsError("SCOS_MAX_DISK_USAGE: must be a number of percent") from None
        if not 0 < max_disk_usage <= 100:
            raise SettingsError(
                f"SCOS_MAX_DISK_USAGE: must be above 0 and at most 100, got {max_disk_usage:g}"
            )
        auth = (get("SCOS_AUTH") or "token").lower()
        if auth not in AUTH_MODES:
            raise SettingsError(f"SCOS_AUTH: must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
        key = get("SCOS_JWT_PUBLIC_KEY")
        jwt_public_key = Path(key) if key else None
        if auth == "jwt":
            if jwt_public_key is None:
                raise SettingsError("SCOS_JWT_PUBLIC_KEY: required when SCOS_AUTH is jwt")
            if not jwt_public_key.is_file():
                raise SettingsError(f"SCOS_JWT_PUBLIC_KEY: no such file {jwt_public_key}")
        callback_auth = (get("SCOS_CALLBACK_AUTH") or "token").lower()
        if callback_auth not in CALLBACK_AUTH_MODES:
            raise SettingsError(
                f"SCOS_CALLBACK_AUTH: must be one of {', '.join(CALLBACK_AUTH_MODES)}, "
                f"got {callback_auth!r}"
            )
        oauth = {name: get(name) for name in OAUTH_VARIABLES}
        if callback_auth == "oauth" or any(oauth.values()):
            for name, value in oauth.items():
                if value is None:
                    raise SettingsError(
                        f"{name}: required when SCOS_CALLBACK_AUTH is oauth or another "
                        "SCOS_OAUTH_ variable is set"
                    )
            _check_http_url("SCOS_OAUTH_TOKEN_URL", oauth["SCOS_OAUTH_TOKEN_URL"])
        verify_text = get("SCOS_CALLBACK_VERIFY") or "true"
        callback_verify: bool | Path
        if verify_text.lower() in TRUE_WORDS:
            callback_verify = True
        elif verify_text.lower() in FALSE_WORDS:
            callback_verify = False
        else:
            callback_verify = Path(verify_text).resolve()
            if not callback_verify.exists():
                raise SettingsError(
                    f"SCOS_CALLBACK_VERIFY: must be true, false or a CA bundle file, "
                    f"and there is no {callback_verify}"
                )
        try:
            callback_retries = int(get("SCOS_CALLBACK_RETRIES") or 10)
        except ValueError:
            raise SettingsError("SCOS_CALLBACK_RETRIES: must be a whole number") from None
        if callback_retries < 1:
            raise SettingsError(
                f"SCOS_CALLBACK_RETRIES: must be at least 1, got {callback_retries}"
            )
        manager_url = get("SCOS_MANAGER_URL")
        if manager_url is not None:
            _check_http_url("SCOS_MANAGER_URL", manager_url)
        config = get("SCOS_CONFIG")
        return cls(
            home=home,
            database_url=database_url,
            data_dir=data_dir,
            max_disk_usage=max_disk_usage,
            auth=auth,
            jwt_public_key=jwt_public_key,
            jwt_issuer=get("SCOS_JWT_ISSUER"),
            jwt_audience=get("SCOS_JWT_AUDIENCE"),
            jwt_role_claim=get("SCOS_JWT_ROLE_CLAIM") or "authorities",
            jwt_required_role=get("SCOS_JWT_REQUIRED_ROLE") or "ROLE_MANAGER",
            jwt_admin_role=get("SCOS_JWT_ADMIN_ROLE") or "ROLE_ADMIN",
            config_dir=Path(config) if config else None,
            callback_auth=callback_auth,
            oauth_token_url=oauth["SCOS_OAUTH_TOKEN_URL"],
            oauth_client_id=oauth["SCOS_OAUTH_CLIENT_ID"],
            oauth_client_secret=oauth["SCOS_OAUTH_CLIENT_SECRET"],
            callback_verify=callback_verify,
            callback_retries=callback_retries,
            manager_url=manager_url,
            manager_token=get("SCOS_MANAGER_TOKEN"),
        )


def _check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: must be an absolute http:// or https:// URL, got {url!r}")
