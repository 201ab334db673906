"""Settings of a sensor (API, scheduler, command line): one surface, two sources.

Every setting is an ``SCOS_*`` variable, listed with its meaning and default in
:data:`VARIABLES`. They are read from the environment and from one settings file,
the environment winning: ``$SCOS_SETTINGS_FILE`` (or ``gr-scos --settings FILE``),
else ``/etc/gr-scos/gr-scos.conf`` when it exists (an empty ``SCOS_SETTINGS_FILE``
reads none). The file holds ``NAME=value`` lines, ``#`` comments and blank lines,
values optionally in quotes: the format of systemd's ``EnvironmentFile=`` and of
docker compose's ``env_file:``, so one file configures all three.
``deploy/gr-scos.conf.example`` is :func:`example_file`'s output.

Every value is checked when the settings are loaded; a bad one is a
:class:`SettingsError` that names the variable (and, from the file, its line), as
does an unknown name in the file (a typo must not pass silently).
"""

import ipaddress
import os
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .config import Config

SETTINGS_FILE_ENV = "SCOS_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = Path("/etc/gr-scos/gr-scos.conf")
AUTH_MODES = ("token", "jwt")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
# The configuration files that may each be given a path of their own.
CONFIG_FILE_VARIABLES = {
    "SCOS_SENSOR_FILE": "sensor.yaml",
    "SCOS_CALIBRATION_FILE": "calibration.yaml",
    "SCOS_LOCATION_FILE": "location.yaml",
    "SCOS_ACTIONS_FILE": "actions.yaml",
}

# Every setting: (its default as a value, or "" where the meaning says; meaning). The
# example file and the settings file's check are made from it.
VARIABLES: dict[str, tuple[str, str]] = {
    "SCOS_HOME": ("./var", "the sensor's state: database, data, sockets, secret.key"),
    "SCOS_DATABASE_URL": (
        "",
        "SQLAlchemy URL: sqlite:////path or postgresql+psycopg://user:pass@host/db "
        "(default: SQLite in SCOS_HOME)",
    ),
    "SCOS_DATA_DIR": ("", "where recordings are written (default: SCOS_HOME/data)"),
    "SCOS_MAX_DISK_USAGE": (
        "85",
        "percent of the data filesystem the sensor may fill; above it the oldest "
        "acquisitions are deleted",
    ),
    "SCOS_SIGAN": (
        "sim",
        "signal analyzer: sim, replay:<file.sigmf-meta>, uhd:<device args> or "
        "osmosdr:<device args>",
    ),
    "SCOS_CONFIG": (
        "",
        "configuration directory: sensor.yaml, calibration.yaml, location.yaml, "
        "actions.yaml, simulator.yaml, flowgraphs/; a file it lacks is the shipped "
        "default (the simulated sensor)",
    ),
    "SCOS_SENSOR_FILE": ("", "the sensor definition, Table 37 (default: in SCOS_CONFIG)"),
    "SCOS_CALIBRATION_FILE": ("", "the calibration data (default: in SCOS_CONFIG)"),
    "SCOS_LOCATION_FILE": ("", "the sensor's location, Table 21 (default: in SCOS_CONFIG)"),
    "SCOS_ACTIONS_FILE": ("", "the actions clients may schedule (default: in SCOS_CONFIG)"),
    "SCOS_AUTH": ("token", "API authentication: token or jwt"),
    "SCOS_JWT_PUBLIC_KEY": ("", "PEM file of the RS256 key that signs JWTs (required for jwt)"),
    "SCOS_JWT_ISSUER": ("", "required iss claim of a JWT (not checked when empty)"),
    "SCOS_JWT_AUDIENCE": ("", "required aud claim of a JWT (not checked when empty)"),
    "SCOS_JWT_ROLE_CLAIM": ("authorities", "JWT claim holding the user's roles"),
    "SCOS_JWT_REQUIRED_ROLE": ("ROLE_MANAGER", "role a JWT must carry to use the API"),
    "SCOS_JWT_ADMIN_ROLE": ("ROLE_ADMIN", "role that makes a JWT user an admin"),
    "SCOS_CALLBACK_AUTH": (
        "token",
        "how notifications authenticate to an entry's callback_url: token (the token "
        "that set it, kept encrypted) or oauth (client credentials; always with jwt)",
    ),
    "SCOS_OAUTH_TOKEN_URL": ("", "OAuth2 token endpoint, client-credentials grant"),
    "SCOS_OAUTH_CLIENT_ID": ("", "the sensor's OAuth2 client id"),
    "SCOS_OAUTH_CLIENT_SECRET": ("", "the sensor's OAuth2 client secret"),
    "SCOS_CALLBACK_VERIFY": (
        "true",
        "TLS verification of callback, token and manager URLs: true, false or a CA bundle file",
    ),
    "SCOS_CALLBACK_RETRIES": ("10", "delivery attempts of a notification before it fails"),
    "SCOS_CALLBACK_HOSTS": (
        "",
        "hosts the operator trusts with outgoing HTTP, comma or space separated: host "
        "names (exact, any case; *.example.org: any name under example.org), IP "
        "addresses and CIDR networks. A callback_url may reach a loopback, link-local, "
        "private or other non-global address only if listed (its name, or a network "
        "holding its address). The sensor's OAuth2 token goes with notifications only "
        "to a listed host (a listed name, or an address of a listed network written in "
        "the URL), and a user's token goes over plain http:// only to one; elsewhere "
        "notifications go without them. The host of SCOS_MANAGER_URL is trusted as if "
        "listed",
    ),
    "SCOS_MANAGER_URL": (
        "",
        "the manager's API (https://host/api/v1): the sensor associates with it at "
        "start-up (Table 1)",
    ),
    "SCOS_MANAGER_TOKEN": ("", "Authorization: Token for the manager, without OAuth2"),
    "SCOS_MAX_CONSECUTIVE_FAILURES": (
        "5",
        "the scheduler exits (status 3, for systemd to restart it) after this many "
        "tasks in a row fail; 0: never",
    ),
    "SCOS_API_BIND": ("127.0.0.1:8000", "address:port the API (gunicorn) listens on"),
    "SCOS_API_WORKERS": (
        "",
        "API worker processes, 4 threads each (default: 2 x CPUs + 1, at most 9)",
    ),
    "SCOS_LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR (of the services)"),
    "SCOS_LOG_FORMAT": ("text", "text (key=value fields) or json (one object per line)"),
}
CALLBACK_AUTH_MODES = ("token", "oauth")
OAUTH_VARIABLES = ("SCOS_OAUTH_TOKEN_URL", "SCOS_OAUTH_CLIENT_ID", "SCOS_OAUTH_CLIENT_SECRET")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and the reason."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A DNS label (RFC 1123; underscores too, which some internal names use).
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
MAX_NAME_LENGTH = 253


def normal_host(host: str) -> str:
    """``host`` as the host lists compare it: without brackets or a final dot, in lower
    case, an IP address in its canonical form."""
    host = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    address = host_address(host)
    return host if address is None else str(address)


def _check_name(entry: str, name: str) -> None:
    labels = name.split(".")
    if (
        len(name) > MAX_NAME_LENGTH
        or not all(_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()  # no top-level domain is a number: a mistyped address
    ):
        raise ValueError(
            f"{entry!r} is not a host name, IP address or CIDR network (no scheme, port or path)"
        )


@dataclass(frozen=True)
class HostList:
    """The hosts of ``SCOS_CALLBACK_HOSTS``: names (exact), domains (a ``*.`` entry:
    any name under it) and IP networks (an address is a network of one)."""

    names: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "HostList":
        """The entries of ``text``, separated by commas or white space; ValueError
        naming the first entry that is none of a name, an address or a network."""
        names, domains, networks = set(), set(), []
        for entry in text.replace(",", " ").split():
            host = normal_host(entry)
            if host_address(host.partition("/")[0]) is not None:
                try:
                    networks.append(ipaddress.ip_network(host))
                except ValueError as error:
                    raise ValueError(f"{entry!r} is not a CIDR network: {error}") from None
            elif host == "*":
                raise ValueError("'*' would trust every host: list names, addresses or networks")
            elif host.startswith("*."):
                _check_name(entry, host[2:])
                domains.add(host[2:])
            else:
                _check_name(entry, host)
                names.add(host)
        return cls(frozenset(names), frozenset(domains), tuple(networks))

    def lists_name(self, host: str) -> bool:
        """Whether the host name ``host`` is listed, exactly or under a domain."""
        name = normal_host(host)
        return name in self.names or any(name.endswith(f".{domain}") for domain in self.domains)

    def lists_address(self, address: IPAddress) -> bool:
        """Whether ``address`` is in a listed network."""
        return any(
            address.version == network.version and address in network for network in self.networks
        )

    def lists(self, host: str) -> bool:
        """Whether ``host`` (a name, or an IP address as a URL writes it) is listed."""
        address = host_address(normal_host(host))
        return self.lists_name(host) if address is None else self.lists_address(address)


def host_address(host: str) -> IPAddress | None:
    """The IP address that ``host`` (in its normal form) writes; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


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
    callback_hosts: HostList = HostList()
    manager_url: str | None = None
    manager_token: str | None = field(default=None, repr=False)
    sigan: str = "sim"
    config_files: dict[str, Path] = field(default_factory=dict)  # by file name
    max_consecutive_failures: int = 5
    log_level: str = "INFO"
    log_format: str = "text"
    api_bind: str = "127.0.0.1:8000"
    api_workers: int | None = None  # gunicorn_conf's default
    source: Path | None = None  # the settings file read, if any

    def config(self) -> "Config":
        """The sensor's configuration (directory and per-file paths), loaded."""
        from .config import Config

        return Config.load(self.config_dir, self.config_files)

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, file: str | Path | None = None
    ) -> "Settings":
        """The settings of the settings file (``file``, else ``$SCOS_SETTINGS_FILE``,
        else the default one when it exists) overridden by ``environ`` (default: the
        process environment)."""
        env = os.environ if environ is None else environ
        if file is None:
            named = env.get(SETTINGS_FILE_ENV)
            if named is not None:
                file = named.strip() or None
            elif DEFAULT_SETTINGS_FILE.is_file():
                file = DEFAULT_SETTINGS_FILE
        values = read_settings_file(Path(file)) if file is not None else {}
        overridden = {name: value for name, value in env.items() if name in VARIABLES}
        settings = cls.from_env(values | overridden)
        return replace(settings, source=None if file is None else Path(file).resolve())

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

        def choice(name: str, choices: tuple[str, ...]) -> str:
            """One of ``choices``, in their case, whatever the case it was written in."""
            value = get(name) or VARIABLES[name][0]
            by_folded = {option.casefold(): option for option in choices}
            if value.casefold() not in by_folded:
                raise SettingsError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
            return by_folded[value.casefold()]

        def whole(name: str, minimum: int) -> int | None:
            """A whole number of at least ``minimum``; None when unset without a default."""
            text = get(name) or VARIABLES[name][0]
            if not text:
                return None
            if not text.isdigit() or int(text) < minimum:
                raise SettingsError(
                    f"{name}: must be a whole number of at least {minimum}, got {text!r}"
                )
            return int(text)

        home = Path(get("SCOS_HOME") or "var").resolve()
        data_dir = Path(get("SCOS_DATA_DIR") or home / "data").resolve()
        database_url = get("SCOS_DATABASE_URL") or f"sqlite:///{home / 'scos.sqlite3'}"
        if not database_url.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise SettingsError(
                f"SCOS_DATABASE_URL: must be a sqlite:/// or postgresql+psycopg:// URL, "
                f"got {database_url!r}"
            )
        try:
            max_disk_usage = float(
                get("SCOS_MAX_DISK_USAGE") or VARIABLES["SCOS_MAX_DISK_USAGE"][0]
            )
        except ValueError:
            raise SettingsError("SCOS_MAX_DISK_USAGE: must be a number of percent") from None
        if not 0 < max_disk_usage <= 100:
            raise SettingsError(
                f"SCOS_MAX_DISK_USAGE: must be above 0 and at most 100, got {max_disk_usage:g}"
            )
        auth = choice("SCOS_AUTH", AUTH_MODES)
        key = get("SCOS_JWT_PUBLIC_KEY")
        jwt_public_key = Path(key) if key else None
        if auth == "jwt":
            if jwt_public_key is None:
                raise SettingsError("SCOS_JWT_PUBLIC_KEY: required when SCOS_AUTH is jwt")
            if not jwt_public_key.is_file():
                raise SettingsError(f"SCOS_JWT_PUBLIC_KEY: no such file {jwt_public_key}")
        callback_auth = choice("SCOS_CALLBACK_AUTH", CALLBACK_AUTH_MODES)
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
            callback_hosts = HostList.parse(get("SCOS_CALLBACK_HOSTS") or "")
        except ValueError as error:
            raise SettingsError(f"SCOS_CALLBACK_HOSTS: {error}") from None
        manager_url = get("SCOS_MANAGER_URL")
        if manager_url is not None:
            _check_http_url("SCOS_MANAGER_URL", manager_url)
        config = get("SCOS_CONFIG")
        if config is not None and not Path(config).is_dir():
            raise SettingsError(f"SCOS_CONFIG: no such directory {config}")
        config_files = {}
        for name, file_name in CONFIG_FILE_VARIABLES.items():
            path = get(name)
            if path is not None:
                if not Path(path).is_file():
                    raise SettingsError(f"{name}: no such file {path}")
                config_files[file_name] = Path(path).resolve()
        sigan = get("SCOS_SIGAN") or VARIABLES["SCOS_SIGAN"][0]
        if sigan != "sim" and sigan.partition(":")[0] not in ("replay", "uhd", "osmosdr"):
            raise SettingsError(
                f"SCOS_SIGAN: must be sim, replay:<file>, uhd:<args> or osmosdr:<args>, "
                f"got {sigan!r}"
            )
        api_bind = get("SCOS_API_BIND") or VARIABLES["SCOS_API_BIND"][0]
        host, colon, port = api_bind.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"SCOS_API_BIND: must be address:port, got {api_bind!r}")
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
            callback_retries=whole("SCOS_CALLBACK_RETRIES", 1),
            callback_hosts=callback_hosts,
            manager_url=manager_url,
            manager_token=get("SCOS_MANAGER_TOKEN"),
            sigan=sigan,
            config_files=config_files,
            max_consecutive_failures=whole("SCOS_MAX_CONSECUTIVE_FAILURES", 0),
            log_level=choice("SCOS_LOG_LEVEL", LOG_LEVELS),
            log_format=choice("SCOS_LOG_FORMAT", LOG_FORMATS),
            api_bind=api_bind,
            api_workers=whole("SCOS_API_WORKERS", 1),
        )


def read_settings_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of a settings file; SettingsError naming the file and
    line of anything else, or of a name that is not a setting."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"settings file {path}: cannot be read: {error}") from None
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name, value = name.strip(), value.strip()
        where = f"{path}:{number}"
        if not equals or not name:
            raise SettingsError(f"{where}: expected NAME=value, got {line!r}")
        if name not in VARIABLES:
            raise SettingsError(f"{where}: {name} is not a setting (see gr-scos config example)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def example_file() -> str:
    """A settings file that documents every setting, each commented out at its default."""
    lines = [
        "# gr-scos settings: NAME=value lines, read by gr-scos (SCOS_SETTINGS_FILE, default",
        "# /etc/gr-scos/gr-scos.conf), systemd (EnvironmentFile=) and docker compose",
        "# (env_file:). Environment variables override this file. Check it with",
        "# gr-scos config check. Every setting is shown at its default.",
    ]
    for name, (default, meaning) in VARIABLES.items():
        lines += ["", *textwrap.wrap(meaning, 84, initial_indent="# ", subsequent_indent="# ")]
        lines.append(f"#{name}={default}" if default else f"#{name}=")
    return "\n".join(lines) + "\n"


def _check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}: must be an absolute http:// or https:// URL, got {url!r}")
