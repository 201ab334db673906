"""nginx in front of a running sensor, configured from deploy/nginx/ exactly as an
operator renders it, with certificates from deploy/make-lab-certs.sh.

Debian's nginx runs in the foreground as the test's user, with its prefix, pid file,
logs and temporary directories in the test's temporary directory, on free ports of
127.0.0.1. ``make test`` installs nginx and openssl (deploy/bootstrap.sh), so a missing
one fails the tests instead of skipping them.
"""

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.deploy.conftest import terminate

REPO = Path(__file__).resolve().parents[2]
NGINX = Path("/usr/sbin/nginx")
MAKE_LAB_CERTS = REPO / "deploy" / "make-lab-certs.sh"
SITE_TEMPLATE = REPO / "deploy" / "nginx" / "gr-scos.conf"
MTLS_TEMPLATE = REPO / "deploy" / "nginx" / "mtls.conf"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")
START_TIMEOUT = 10
STOP_TIMEOUT = 10
TASK_TIMEOUT = 60
# Generous: the sensor's workers may still be starting on a loaded test machine.
REQUEST_TIMEOUT = 30
COMMAND_TIMEOUT = 60
# nginx's temporary directories, all in the test's prefix: the defaults under
# /var/lib/nginx belong to the system's nginx.
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_session(headers: dict[str, str] | None = None) -> requests.Session:
    """A requests session deaf to the environment: REQUESTS_CA_BUNDLE would override
    its CA, and an HTTP(S)_PROXY would come between the test and the servers."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(headers or {})
    return session


def render(template: Path, values: dict[str, str]) -> str:
    """``template`` with every ``@NAME@`` replaced, as sed does it for an operator;
    a placeholder left over is an error."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    leftover = sorted(set(PLACEHOLDER.findall(text)))
    assert not leftover, f"{template.name}: placeholders not rendered: {leftover}"
    return text


def make_lab_certs(out: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MAKE_LAB_CERTS, *arguments, str(out)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


@pytest.fixture(scope="module", autouse=True)
def required_programs() -> None:
    """nginx and openssl, or every test fails saying how to get them."""
    missing = [
        name
        for name, present in (("nginx", NGINX.exists()), ("openssl", shutil.which("openssl")))
        if not present
    ]
    if missing:
        pytest.fail(
            f"not installed: {', '.join(missing)}; `make test` installs them "
            "(deploy/bootstrap.sh: Debian packages nginx-light and openssl)"
        )


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """The lab CA, server (localhost, 127.0.0.1) and client certificates."""
    out = tmp_path_factory.mktemp("certs") / "lab"
    made = make_lab_certs(out)
    assert made.returncode == 0, made.stderr
    return out


@dataclass
class Nginx:
    """A foreground nginx master (and its worker) serving the rendered site."""

    process: subprocess.Popen
    prefix: Path
    http_port: int
    https_port: int
    ca: Path

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def api(self) -> str:
        return f"{self.origin}/api/v1"

    def session(self, headers: dict[str, str] | None = None) -> requests.Session:
        """A session that trusts only the lab CA."""
        session = isolated_session(headers)
        session.verify = str(self.ca)
        return session

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: the master stops its workers), SIGKILL to the whole
        process group if that hangs, then the prefix with its temporary files goes."""
        terminate(self.process, STOP_TIMEOUT)
        shutil.rmtree(self.prefix, ignore_errors=True)


def start_nginx(prefix: Path, certs: Path, upstream: str, mtls: bool = False) -> Nginx:
    """nginx with the site rendered for 127.0.0.1 and ``upstream``; with ``mtls``,
    mtls.conf rendered into its snippet directory (which is otherwise absent)."""
    http_port, https_port = free_port(), free_port()
    prefix.mkdir(parents=True, exist_ok=True)
    snippets = prefix / "gr-scos.d"
    if mtls:
        snippets.mkdir(parents=True)
        (snippets / "mtls.conf").write_text(
            render(MTLS_TEMPLATE, {"CLIENT_CA": str(certs / "ca.crt")})
        )
    site = prefix / "gr-scos.conf"
    site.write_text(
        render(
            SITE_TEMPLATE,
            {
                "SERVER_NAME": "localhost 127.0.0.1",
                "HTTP_LISTEN": f"127.0.0.1:{http_port}",
                "HTTPS_LISTEN": f"127.0.0.1:{https_port}",
                "TLS_CERTIFICATE": str(certs / "server.crt"),
                "TLS_CERTIFICATE_KEY": str(certs / "server.key"),
                "UPSTREAM": upstream,
                "INCLUDE_DIR": str(snippets),
            },
        )
    )
    temp = prefix / "temp"
    for name in TEMP_DIRS:
        (temp / name).mkdir(parents=True)
    temp_paths = "\n".join(f"    {name}_temp_path {temp / name};" for name in TEMP_DIRS)
    # The main configuration Debian's /etc/nginx/nginx.conf stands for: the site goes
    # into the http block, as sites-enabled/ does.
    # As root, nginx would run its workers as nobody, who cannot enter pytest's private
    # temporary directories: they stay root, as they stay the test's user under any other.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(
        f"{user}"
        f"daemon off;\n"
        f"worker_processes 1;\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        f"events {{\n    worker_connections 64;\n}}\n"
        f"http {{\n"
        f"    access_log {prefix / 'access.log'};\n"
        f"{temp_paths}\n"
        f"    include {site};\n"
        f"}}\n"
    )
    stderr = (prefix / "stderr.log").open("w")
    process = subprocess.Popen(
        [NGINX, "-p", f"{prefix}/", "-c", str(main), "-e", str(prefix / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=stderr,
        stderr=stderr,
        start_new_session=True,
    )
    stderr.close()
    nginx = Nginx(process, prefix, http_port, https_port, certs / "ca.crt")
    deadline = time.monotonic() + START_TIMEOUT
    while not all(_listening(port) for port in (http_port, https_port)):
        if process.poll() is not None or time.monotonic() > deadline:
            log = (prefix / "stderr.log").read_text() + nginx.error_log()
            nginx.stop()
            pytest.fail(f"nginx did not start (exit status {process.returncode}):\n{log}")
        time.sleep(0.05)
    return nginx


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _serving(sensor, certs, tmp_path_factory, mtls: bool) -> Iterator[Nginx]:
    running = start_nginx(
        tmp_path_factory.mktemp("nginx"), certs, f"127.0.0.1:{sensor.port}", mtls=mtls
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def nginx(sensor, certs, tmp_path_factory) -> Iterator[Nginx]:
    yield from _serving(sensor, certs, tmp_path_factory, mtls=False)


@pytest.fixture(scope="module")
def nginx_mtls(sensor, certs, tmp_path_factory) -> Iterator[Nginx]:
    yield from _serving(sensor, certs, tmp_path_factory, mtls=True)


@pytest.fixture(scope="module")
def finished_task(sensor) -> str:
    """The schedule_id of a one-shot acquire_iq entry whose task 1 succeeded."""
    with isolated_session(sensor.headers) as direct:
        created = direct.post(
            f"{sensor.url}/schedule",
            json={"name": "through nginx", "action": "acquire_iq"},
            timeout=REQUEST_TIMEOUT,
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["schedule_id"]
        deadline = time.monotonic() + TASK_TIMEOUT
        while True:
            tasks = direct.get(
                f"{sensor.url}/schedule/{schedule_id}/tasks", timeout=REQUEST_TIMEOUT
            ).json()
            results = tasks["results"]
            if results and results[0]["status"] in ("success", "fail"):
                break
            assert time.monotonic() < deadline, f"task 1 did not finish: {results}"
            time.sleep(0.1)
    assert results[0]["status"] == "success", results[0]
    return schedule_id


def handshake(
    nginx: Nginx,
    version: ssl.TLSVersion,
    ciphers: str | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLSocket:
    """A TLS connection to nginx's HTTPS port speaking exactly ``version``."""
    context = ssl.create_default_context(cafile=nginx.ca)
    # TLS 1.0 and 1.1 are deprecated in Python: that is the point of offering them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", nginx.https_port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def sha256_of_download(response: requests.Response) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in response.iter_content(chunk_size=1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


# -- the lab certificates --------------------------------------------------------------


def openssl(*arguments: str) -> str:
    done = subprocess.run(
        ["openssl", *arguments], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lab_certificates_chain_to_the_test_ca(certs):
    for name in ("server", "client"):
        assert openssl("verify", "-CAfile", str(certs / "ca.crt"), str(certs / f"{name}.crt"))
    server = openssl("x509", "-in", str(certs / "server.crt"), "-noout", "-ext", "subjectAltName")
    assert "DNS:localhost" in server and "IP Address:127.0.0.1" in server
    usages = {
        name: openssl(
            "x509", "-in", str(certs / f"{name}.crt"), "-noout", "-ext", "extendedKeyUsage"
        )
        for name in ("server", "client")
    }
    assert "TLS Web Server Authentication" in usages["server"]
    assert "TLS Web Client Authentication" in usages["client"]
    bundle = openssl(
        "pkcs12",
        "-in",
        str(certs / "client.p12"),
        "-passin",
        f"file:{certs / 'client.p12.password'}",
        "-nokeys",
    )
    assert "subject=O = gr-scos lab, CN = gr-scos-client" in bundle
    for key in ("ca.key", "server.key", "client.key", "client.p12", "client.p12.password"):
        assert (certs / key).stat().st_mode & 0o077 == 0, f"{key} is readable by others"


def test_lab_certificates_keep_an_existing_ca_unless_told(tmp_path):
    out = tmp_path / "lab"
    assert make_lab_certs(out).returncode == 0
    ca = (out / "ca.crt").read_bytes()
    again = make_lab_certs(out)
    assert again.returncode != 0
    assert "already holds a CA" in again.stderr
    assert (out / "ca.crt").read_bytes() == ca

    reissued = make_lab_certs(out, "--reuse-ca", "--host", "sensor.lab", "--ip", "192.0.2.7")
    assert reissued.returncode == 0, reissued.stderr
    assert (out / "ca.crt").read_bytes() == ca
    names = openssl("x509", "-in", str(out / "server.crt"), "-noout", "-ext", "subjectAltName")
    assert "DNS:sensor.lab" in names and "IP Address:192.0.2.7" in names
    assert "localhost" not in names

    assert make_lab_certs(out, "--force").returncode == 0
    assert (out / "ca.crt").read_bytes() != ca


@pytest.mark.parametrize(
    "arguments",
    [(), ("--bogus",), ("--ip", "1.2"), ("--host", "a b"), ("--days", "0"), ("--host",)],
    ids=["no-outdir", "unknown-option", "bad-ip", "bad-host", "bad-days", "missing-value"],
)
def test_lab_certificates_reject_bad_arguments(arguments, tmp_path):
    done = subprocess.run(
        [MAKE_LAB_CERTS, *arguments],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=COMMAND_TIMEOUT,
    )
    assert done.returncode != 0
    assert "make-lab-certs.sh:" in done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written on bad arguments"


# -- HTTPS, HTTP and TLS ---------------------------------------------------------------


def test_https_serves_the_api_with_its_authentication(nginx, sensor):
    with nginx.session() as session:
        status = session.get(f"{nginx.api}/status", headers=sensor.headers, timeout=REQUEST_TIMEOUT)
        assert status.status_code == 200, status.text
        assert status.headers["Content-Type"] == "application/json"
        assert "scheduler" in status.json()
        assert status.headers["Strict-Transport-Security"] == "max-age=63072000"
        assert "nginx/" not in status.headers["Server"], "server_tokens off"

        anonymous = session.get(f"{nginx.api}/status", timeout=REQUEST_TIMEOUT)
        assert anonymous.status_code == 401
        assert "message" in anonymous.json()


def test_plain_http_only_redirects_to_https(nginx, sensor):
    with isolated_session(sensor.headers) as session:
        response = session.get(
            f"http://127.0.0.1:{nginx.http_port}/api/v1/status?limit=5",
            allow_redirects=False,
            timeout=REQUEST_TIMEOUT,
        )
    assert response.status_code == 301
    assert response.headers["Location"] == "https://127.0.0.1/api/v1/status?limit=5"


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=lambda version: version.name
)
def test_tls_1_2_and_1_3_are_accepted_with_http2(nginx, version):
    with handshake(nginx, version, alpn=["h2", "http/1.1"]) as tls:
        assert tls.version() == version.name.replace("_", ".")
        assert tls.selected_alpn_protocol() == "h2"


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=lambda version: version.name
)
def test_tls_below_1_2_is_refused_by_nginx(nginx, version):
    # Security level 0: above it, OpenSSL 3 itself would give up on TLS < 1.2 (its
    # handshakes need SHA-1 signatures), and the refusal must be nginx's.
    with pytest.raises(ssl.SSLError) as refused:
        handshake(nginx, version, ciphers="DEFAULT:@SECLEVEL=0").close()
    # The server's protocol_version alert, not the client declining to offer it.
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value


def test_tls_1_2_without_aead_suites_is_refused(nginx):
    with pytest.raises(ssl.SSLError) as refused:
        handshake(nginx, ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA").close()
    assert refused.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", refused.value


# -- what is proxied -------------------------------------------------------------------


def test_swagger_ui_and_its_assets_come_through(nginx, sensor):
    with nginx.session() as session, isolated_session() as direct_session:
        page = session.get(f"{nginx.api}/docs", timeout=REQUEST_TIMEOUT)
        assert page.status_code == 200, page.text
        assert page.headers["Content-Type"].startswith("text/html")
        assets = re.findall(r"""["'](/swaggerui/[^"']+\.js)["']""", page.text)
        assert assets, page.text
        for asset in assets:
            script = session.get(f"{nginx.origin}{asset}", timeout=REQUEST_TIMEOUT)
            direct = direct_session.get(
                f"http://127.0.0.1:{sensor.port}{asset}", timeout=REQUEST_TIMEOUT
            )
            assert script.status_code == 200, asset
            assert script.content == direct.content, asset
        spec = session.get(f"{nginx.api}/swagger.json", timeout=REQUEST_TIMEOUT)
        assert spec.status_code == 200
        assert spec.json()["basePath"] == "/api/v1"


def test_paths_outside_the_api_are_json_404(nginx):
    with nginx.session() as session:
        response = session.get(f"{nginx.origin}/index.html", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "/api/v1/" in response.json()["message"]


def test_request_bodies_over_1_mib_are_refused(nginx, sensor):
    headers = sensor.headers | {"Content-Type": "application/json"}
    with nginx.session(headers) as session:
        too_large = session.post(
            f"{nginx.api}/schedule", data=b" " * (1 << 20 | 1), timeout=REQUEST_TIMEOUT
        )
        assert too_large.status_code == 413
        assert too_large.json() == {"message": "the request body is larger than 1 MiB"}
        # Just under the limit, the API itself answers (the body is no schedule entry).
        within = session.post(
            f"{nginx.api}/schedule", data=b" " * ((1 << 20) - 1), timeout=REQUEST_TIMEOUT
        )
        assert within.status_code == 400, within.text


def test_archive_streams_through_nginx_byte_for_byte(nginx, sensor, finished_task):
    path = f"/api/v1/schedule/{finished_task}/tasks/1/archive"
    with (
        isolated_session(sensor.headers) as session,
        session.get(
            f"http://127.0.0.1:{sensor.port}{path}", stream=True, timeout=REQUEST_TIMEOUT
        ) as direct,
    ):
        assert direct.status_code == 200, direct.text
        direct_digest, direct_size = sha256_of_download(direct)
        assert int(direct.headers["Content-Length"]) == direct_size

    with (
        nginx.session(sensor.headers) as session,
        session.get(f"{nginx.origin}{path}", stream=True, timeout=REQUEST_TIMEOUT) as proxied,
    ):
        assert proxied.status_code == 200, proxied.text
        assert proxied.headers["Content-Type"] == "application/x-tar"
        assert proxied.headers["Content-Length"] == str(direct_size)
        assert "Transfer-Encoding" not in proxied.headers
        digest, size = sha256_of_download(proxied)
    assert (digest, size) == (direct_digest, direct_size)
    assert direct_size > 0
    # Not one byte of it spooled to disk.
    assert "upstream response is buffered to a temporary file" not in nginx.error_log()
    assert list((nginx.prefix / "temp" / "proxy").iterdir()) == []


def test_links_in_json_point_at_nginx(nginx, sensor, finished_task):
    origin = nginx.origin
    # A client's own X-Forwarded-* must not move the links elsewhere.
    spoofed = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
    with nginx.session(sensor.headers | spoofed) as session:
        task = session.get(
            f"{nginx.api}/schedule/{finished_task}/tasks", timeout=REQUEST_TIMEOUT
        ).json()["results"][0]
        expected = f"{origin}/api/v1/schedule/{finished_task}/tasks/1"
        assert task["url"] == expected, (
            "the API writes its links from the request it sees: behind nginx it needs "
            "werkzeug's ProxyFix (x_proto, x_host, x_port) in webapi/app.py"
        )
        assert task["archive_id"] == f"{expected}/archive"
        # The links work as they are.
        archive = session.head(task["archive_id"], timeout=REQUEST_TIMEOUT)
        assert archive.status_code == 200

        created = session.post(
            f"{nginx.api}/schedule",
            json={"name": "link check", "action": "acquire_iq", "is_active": False},
            timeout=REQUEST_TIMEOUT,
        )
        assert created.status_code == 201, created.text
        assert created.headers["Location"] == f"{origin}/api/v1/schedule/link-check"
        assert created.json()["url"] == created.headers["Location"]


# -- mutual TLS ------------------------------------------------------------------------


def test_mtls_refuses_clients_without_a_certificate(nginx_mtls, sensor):
    with nginx_mtls.session(sensor.headers) as session:
        response = session.get(f"{nginx_mtls.api}/status", timeout=REQUEST_TIMEOUT)
    # TLS 1.3 completes the handshake without one; nginx then answers 400 (its 496).
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert "client certificate" in response.json()["message"]
    assert "client sent no required SSL certificate" in nginx_mtls.error_log()


def test_mtls_refuses_a_certificate_from_another_ca(nginx_mtls, sensor, tmp_path):
    stranger = tmp_path / "stranger"
    assert make_lab_certs(stranger).returncode == 0
    with nginx_mtls.session(sensor.headers) as session:
        session.cert = (str(stranger / "client.crt"), str(stranger / "client.key"))
        response = session.get(f"{nginx_mtls.api}/status", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 400
    assert "client certificate" in response.json()["message"]
    assert "client SSL certificate verify error" in nginx_mtls.error_log()


def test_mtls_admits_the_lab_client_certificate(nginx_mtls, sensor, certs):
    with nginx_mtls.session() as session:
        session.cert = (str(certs / "client.crt"), str(certs / "client.key"))
        response = session.get(
            f"{nginx_mtls.api}/status", headers=sensor.headers, timeout=REQUEST_TIMEOUT
        )
        assert response.status_code == 200, response.text
        # The certificate gets a client past TLS; the API still wants its token.
        assert session.get(f"{nginx_mtls.api}/status", timeout=REQUEST_TIMEOUT).status_code == 401


def test_a_stopped_sensor_is_a_json_502(certs, tmp_path):
    dead = start_nginx(tmp_path / "nginx", certs, f"127.0.0.1:{free_port()}")
    try:
        with dead.session() as session:
            response = session.get(f"{dead.api}/status", timeout=REQUEST_TIMEOUT)
        assert response.status_code == 502
        assert response.json() == {"message": "the sensor API is not running"}
    finally:
        dead.stop()
