"""The rules of the sensor's outgoing HTTP (notifications, manager association,
OAuth2): where it may go, and which credentials may go with it.

Where: a callback_url must not make the sensor POST inside its own network. Its
host must be reachable at a global unicast address, unless the operator lists it in
``SCOS_CALLBACK_HOSTS`` (by name, or by an address or network; the host of
``SCOS_MANAGER_URL`` counts as listed). The API checks a callback_url when it is set,
resolving its name (:meth:`OutboundPolicy.check_callback_url`); a name can resolve
elsewhere later (DNS rebinding), so every connection of a notification is checked
again, on the address the socket actually connected to, before a byte is sent
(:func:`http_session`). URLs with ``user:password@`` are refused: requests would
send them as Basic credentials.

Credentials: the sensor's own (the OAuth2 bearer token) go only to a listed host:
a listed name, or an address of a listed network written in the URL. A name that
merely resolves into a listed network is not enough, because what a request carries
is decided before it connects. A user's token goes to the callback_url its holder
set, over https://, or over plain http:// to a listed host only.

No environment: sessions ignore ``~/.netrc`` (requests would add its credentials
for whatever host matches), the proxy variables (a proxy would stand between the
sensor and the host, so the connected address would be the proxy's) and the CA
bundle variables (``SCOS_CALLBACK_VERIFY`` decides).
"""

import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..settings import IPAddress, Settings, host_address, normal_host

logger = logging.getLogger(__name__)

HOSTS_SETTING = "SCOS_CALLBACK_HOSTS"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: IPv4 addresses behind a NAT64
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")

Resolver = Callable[[str], list[IPAddress]]


class DestinationError(Exception):
    """A destination the sensor must not send to; the message says why."""


@dataclass(frozen=True)
class Target:
    """The parts of a URL that decide where it goes."""

    scheme: str
    host: str  # as :func:`grscos.settings.normal_host` writes it


def parse_url(url: str) -> Target:
    """The target of ``url``; :class:`DestinationError` unless it is an absolute http:// or
    https:// URL with a host, a valid port and no user name or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as error:
        raise DestinationError(f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
        raise DestinationError("must be an absolute http:// or https:// URL with a host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise DestinationError("has an invalid port")
    if "@" in parts.netloc:
        raise DestinationError(
            "must not hold a user name or password (user:password@): they would be sent "
            "as credentials"
        )
    if host_address(host) is None:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise DestinationError(f"has an invalid host name {host!r}") from None
    return Target(parts.scheme, normal_host(host))


def resolve(name: str) -> list[IPAddress]:
    """The addresses ``name`` resolves to (as a TCP connection would use them)."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def non_global(address: IPAddress) -> str | None:
    """What keeps ``address`` from being a global unicast address (``"a loopback
    address"``, ...), judging an IPv4 address embedded in an IPv6 one (mapped, 6to4,
    NAT64) by itself; None for a global one."""
    address = _embedded(address)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 6 and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "a non-global address"
    return None


class OutboundPolicy:
    """Where outgoing HTTP may go and what it may carry, under ``settings``;
    ``resolver`` gives a name's addresses (DNS by default)."""

    def __init__(self, settings: Settings, resolver: Resolver = resolve):
        self.listed = settings.callback_hosts
        manager = urlsplit(settings.manager_url).hostname if settings.manager_url else None
        self.manager_host = normal_host(manager) if manager else None
        self.resolver = resolver

    def lists(self, host: str) -> bool:
        """Whether ``host`` (a name, or an IP address as a URL writes it) is listed in
        SCOS_CALLBACK_HOSTS or is the manager's."""
        return normal_host(host) == self.manager_host or self.listed.lists(host)

    def trusts(self, url: str) -> bool:
        """Whether the sensor's own credentials may go to ``url``."""
        return self.lists(parse_url(url).host)

    def may_send_token(self, url: str) -> bool:
        """Whether a user's token may go to ``url``, the callback_url its holder set:
        over https://, or to a listed host."""
        target = parse_url(url)
        return target.scheme == "https" or self.lists(target.host)

    def check_callback_url(self, url: str) -> None:
        """:class:`DestinationError` unless the sensor may send notifications to ``url``: its
        form (:func:`parse_url`), and its host listed or every address it resolves to
        global (or in a listed network)."""
        host = parse_url(url).host
        if self.lists(host):
            return
        address = host_address(host)
        if address is not None:
            self._check_address(host, address, "is")
            return
        try:
            addresses = self.resolver(host)
        except (OSError, UnicodeError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise DestinationError(f"host {host} does not resolve ({reason})") from None
        if not addresses:
            raise DestinationError(f"host {host} does not resolve (no address)")
        for address in addresses:
            self._check_address(host, address, "resolves to")

    def check_peer(self, host: str, peer: str) -> None:
        """:class:`DestinationError` unless a connection to ``host`` may go on with the peer
        address ``peer``, the one the socket connected to."""
        if self.lists(host):
            return
        self._check_address(normal_host(host), ipaddress.ip_address(peer), "is at")

    def _check_address(self, host: str, address: IPAddress, verb: str) -> None:
        kind = non_global(address)
        if kind is None or any(map(self.listed.lists_address, (address, _embedded(address)))):
            return
        where = (
            f"{address} is {kind}" if host == str(address) else f"{host} {verb} {address}, {kind}"
        )
        raise DestinationError(f"{where}; not allowed unless listed in {HOSTS_SETTING}")


def _embedded(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for, if any; else ``address``."""
    if address.version == 4:
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address


# --- sessions ----------------------------------------------------------------------------

PeerCheck = Callable[[str, str], None]


class _PeerChecking:
    """A urllib3 connection that checks the address its socket connected to before
    anything is sent on it (for https:// before the TLS handshake)."""

    def __init__(self, *args, peer_check: PeerCheck, **kwargs):
        super().__init__(*args, **kwargs)
        self.peer_check = peer_check

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        try:
            self.peer_check(self.host, sock.getpeername()[0])
        except BaseException:
            sock.close()
            raise
        return sock


class _CheckedHTTPConnection(_PeerChecking, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_PeerChecking, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedPoolManager(PoolManager):
    def __init__(self, peer_check: PeerCheck, **kwargs):
        super().__init__(**kwargs)
        self.peer_check = peer_check
        self.pool_classes_by_scheme = {"http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}

    def _new_pool(self, scheme, host, port, request_context=None):
        # urllib3's documented place to customise pools; the check is not part of the
        # pool key, so it cannot travel in connection_pool_kw.
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["peer_check"] = self.peer_check
        return pool


class _CheckedAdapter(HTTPAdapter):
    def __init__(self, peer_check: PeerCheck):
        self.peer_check = peer_check  # before HTTPAdapter makes its pool manager
        super().__init__()

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _CheckedPoolManager(
            self.peer_check, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


def http_session(policy: OutboundPolicy | None = None) -> requests.Session:
    """A requests session that ignores the environment (netrc, proxies, CA bundle
    variables); with ``policy``, every connection it opens is refused
    (:class:`DestinationError`, raised from the request) unless ``policy.check_peer`` accepts
    the address it connected to."""
    session = requests.Session()
    session.trust_env = False
    if policy is not None:
        adapter = _CheckedAdapter(policy.check_peer)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session
