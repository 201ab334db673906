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
=========================  ==============================================  ====================

Every value is checked when the settings are loaded; a bad one is a
:class:`SettingsError` that names the variable.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

AUTH_MODES = ("token", "jwt")


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
        )
