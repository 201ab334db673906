"""Where the sensor's outgoing HTTP may go and what it may carry (scheduler/outbound.py),
decided with a resolver the test gives, so that public names and addresses, which
the tests cannot reach, can be judged too; and the one backoff of outgoing HTTP.
The same rules end to end, on loopback: tests/api/test_callbacks.py."""

import ipaddress
import socket
from pathlib import Path

import pytest

from grscos.scheduler.association import Associator
from grscos.scheduler.backoff import DATABASE_RETRY, Backoff
from grscos.scheduler.callbacks import Notifier
from grscos.scheduler.outbound import DestinationError, OutboundPolicy
from grscos.settings import HostList, Settings

PUBLIC = "203.0.114.7"  # not a documentation range: a global address
NAMES = {
    "receiver.example.net": [PUBLIC],
    "internal.example.net": ["10.1.2.3"],
    "both.example.net": [PUBLIC, "192.168.0.9"],
    "sneaky.example.net": ["::ffff:127.0.0.1"],
}


def resolver(name: str) -> list:
    if name not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [ipaddress.ip_address(address) for address in NAMES[name]]


def policy(hosts: str = "", manager: str | None = None) -> OutboundPolicy:
    settings = Settings(
        home=Path("/nonexistent"),
        database_url="sqlite://",
        data_dir=Path("/nonexistent"),
        callback_hosts=HostList.parse(hosts),
        manager_url=manager,
    )
    return OutboundPolicy(settings, resolver)


def refusal(rules: OutboundPolicy, url: str) -> str:
    with pytest.raises(DestinationError) as raised:
        rules.check_callback_url(url)
    return str(raised.value)


NOT_LISTED = "; not allowed unless listed in SCOS_CALLBACK_HOSTS"


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "a loopback"),
        ("127.8.9.10", "a loopback"),
        ("[::1]", "a loopback"),
        ("[::ffff:127.0.0.1]", "a loopback"),  # an IPv4 address in IPv6 clothes
        ("[2002:7f00:1::]", "a loopback"),  # 6to4 of 127.0.0.1
        ("169.254.169.254", "a link-local"),  # the cloud metadata service
        ("[fe80::1]", "a link-local"),
        ("10.0.0.1", "a private"),
        ("172.16.5.4", "a private"),
        ("192.168.1.1", "a private"),
        ("[64:ff9b::a00:1]", "a private"),  # NAT64 of 10.0.0.1
        ("[fd12:3456::1]", "a unique-local"),
        ("224.0.0.1", "a multicast"),
        ("[ff02::1]", "a multicast"),
        ("0.0.0.0", "an unspecified"),
        ("[::]", "an unspecified"),
        ("100.64.0.1", "a non-global"),  # carrier-grade NAT
    ],
)
def test_non_global_addresses_are_refused_unless_listed(host, kind):
    url = f"http://{host}:8080/cb"
    address = host.strip("[]")
    shown = str(ipaddress.ip_address(address))
    assert refusal(policy(), url) == f"{shown} is {kind} address{NOT_LISTED}"
    policy(address).check_callback_url(url)  # listed: allowed
    network = ipaddress.ip_network(address).supernet(new_prefix=8 if "." in address else 64)
    policy(f"{network}").check_callback_url(url)
    assert policy(address).trusts(url) and not policy().trusts(url)


def test_a_name_is_judged_by_every_address_it_resolves_to():
    rules = policy()
    rules.check_callback_url("https://receiver.example.net/cb")
    assert refusal(rules, "https://internal.example.net/cb") == (
        f"internal.example.net resolves to 10.1.2.3, a private address{NOT_LISTED}"
    )
    assert refusal(rules, "https://both.example.net/cb") == (
        f"both.example.net resolves to 192.168.0.9, a private address{NOT_LISTED}"
    )
    assert refusal(rules, "https://sneaky.example.net/cb") == (
        f"sneaky.example.net resolves to {ipaddress.ip_address('::ffff:127.0.0.1')}, "
        f"a loopback address{NOT_LISTED}"
    )
    assert refusal(rules, "https://nowhere.example.net/cb") == (
        "host nowhere.example.net does not resolve (Name or service not known)"
    )
    # Listed by name, it is not resolved at all; listed by network, its address is.
    policy("nowhere.example.net").check_callback_url("https://nowhere.example.net/cb")
    policy("*.example.net").check_callback_url("https://internal.example.net/cb")
    policy("10.0.0.0/8").check_callback_url("https://internal.example.net/cb")
    assert "192.168.0.9" in refusal(policy("10.0.0.0/8"), "https://both.example.net/cb")


def test_the_sensors_credentials_go_only_to_listed_hosts():
    rules = policy(
        "receiver.example.org *.fleet.example 10.9.0.0/16", manager="https://Manager.Example/api/v1"
    )
    for url in (
        "https://receiver.example.org/cb",
        "https://RECEIVER.example.org./cb",
        "https://a.b.fleet.example/cb",
        "https://manager.example/cb",  # the manager's host counts as listed
        "http://10.9.1.2:8000/cb",  # an address of a listed network, written in the URL
    ):
        rules.check_callback_url(url)
        assert rules.trusts(url), url
    for url in (
        "https://receiver.example.net/cb",  # public, allowed, not listed
        f"https://{PUBLIC}/cb",
        "https://fleet.example/cb",  # *.fleet.example lists the names under it only
        "https://receiver.example.org.evil.example/cb",
    ):
        assert not rules.trusts(url), url
    rules.check_callback_url("https://receiver.example.net/cb")
    # A name that resolves into a listed network may be reached, but is not trusted:
    # what a request carries is decided before it connects.
    by_network = policy("10.0.0.0/8")
    by_network.check_callback_url("https://internal.example.net/cb")
    assert not by_network.trusts("https://internal.example.net/cb")


def test_a_users_token_goes_over_plain_http_only_to_listed_hosts():
    rules = policy("receiver.example.org")
    assert rules.may_send_token("https://receiver.example.net/cb")
    assert not rules.may_send_token("http://receiver.example.net/cb")
    assert rules.may_send_token("http://receiver.example.org/cb")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1/x", "is not a valid URL (Invalid IPv6 URL)"),
        (
            "http://[zz]/x",
            "is not a valid URL ('zz' does not appear to be an IPv4 or IPv6 address)",
        ),
        ("http://user:secret@receiver.example.net/cb", "must not hold a user name or password"),
        ("http://user@receiver.example.net/cb", "must not hold a user name or password"),
        ("http://:@receiver.example.net/cb", "must not hold a user name or password"),
        ("http://receiver.example.net:0/cb", "has an invalid port"),
        ("http://receiver.example.net:99999/cb", "has an invalid port"),
        ("http://a..b/cb", "has an invalid host name"),
        ("http://" + "a" * 64 + ".example/cb", "has an invalid host name"),
        ("ftp://receiver.example.net/cb", "must be an absolute http:// or https:// URL"),
        ("http:///cb", "must be an absolute http:// or https:// URL with a host"),
    ],
)
def test_malformed_urls_are_refused_saying_why(url, reason):
    assert refusal(policy("receiver.example.net"), url).startswith(reason)


def test_the_address_connected_to_is_checked_against_the_url_host():
    rules = policy("internal.example.net 172.16.0.0/12")
    rules.check_peer("receiver.example.net", PUBLIC)
    rules.check_peer("internal.example.net", "10.1.2.3")  # listed by name: any address
    rules.check_peer("receiver.example.net", "172.16.9.9")  # a listed network
    with pytest.raises(DestinationError) as refused:
        rules.check_peer("receiver.example.net", "127.0.0.1")
    assert str(refused.value) == (
        f"receiver.example.net is at 127.0.0.1, a loopback address{NOT_LISTED}"
    )
    with pytest.raises(DestinationError, match=r"^10\.0\.0\.1 is a private address"):
        rules.check_peer("10.0.0.1", "10.0.0.1")


def test_the_backoff_doubles_up_to_its_cap_and_never_overflows():
    backoff = Backoff(1.0, 300.0)
    assert [backoff.delay(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff.delay(0) == 1.0
    # An associator retries for as long as the manager refuses: days of attempts.
    assert backoff.delay(5000) == 300.0
    assert Backoff(0.1, 0.4).delay(3) == pytest.approx(0.4)
    # One backoff for all of outgoing HTTP.
    assert Associator.backoff == Notifier.backoff == backoff
    assert Notifier.outage_backoff == DATABASE_RETRY == Backoff(1.0, 5.0)
