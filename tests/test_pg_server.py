"""The throwaway PostgreSQL server of tests/pg_server.py: a real server, reached the
way the application reaches it (SQLAlchemy URL, TCP, password)."""

import socket
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

from tests.pg_server import PostgresServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with PostgresServer(tmp_path_factory.mktemp("pg")) as pg:
        yield pg


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie: the postmaster, orphaned by
    pg_ctl, is reaped by init, which may take its time (this sandbox's init does)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_url_reaches_the_scos_database(server):
    url = server.url()
    assert url == f"postgresql+psycopg://scos:{server.password}@127.0.0.1:{server.port}/scos"
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE sample (id int PRIMARY KEY, name text)"))
            conn.execute(
                sqlalchemy.text("INSERT INTO sample VALUES (:id, :name)"),
                [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
            )
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text("SELECT id, name FROM sample ORDER BY id")).all()
            who = conn.execute(sqlalchemy.text("SELECT current_user, current_database()")).one()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "one"), (2, "two")]
    assert tuple(who) == ("scos", "scos")
    # Password authentication over TCP: a wrong password is refused.
    bad = url.replace(server.password, "wrong").replace("+psycopg", "")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad).close()


def test_create_and_drop_database(server):
    url = server.create_database("scos_extra")
    assert url == server.url("scos_extra")
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")  # scos owns the database
        conn.execute("INSERT INTO t VALUES (42)")
        assert conn.execute("SELECT x FROM t").fetchone() == (42,)
        # Still connected: drop_database closes the connections it has.
        server.drop_database("scos_extra")
    with psycopg.connect(server.url().replace("+psycopg", "")) as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert "scos" in names
    assert "scos_extra" not in names
    server.drop_database("scos_extra")  # absent: no error


def test_stop_is_idempotent_and_closes_the_port(tmp_path):
    pg = PostgresServer(tmp_path / "pg")
    began = time.monotonic()
    pg.start()
    started_in = time.monotonic() - began
    try:
        assert _port_open(pg.port)
        pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        assert started_in < 10, f"the server took {started_in:.1f} s to start"
    finally:
        pg.stop()
    pg.stop()
    assert not _port_open(pg.port)
    assert not (pg.data_dir / "postmaster.pid").exists()
    assert not _running(pid)
    # The context manager restarts the same cluster, with the same role and data.
    with pg:
        assert _port_open(pg.port)
        with psycopg.connect(pg.url().replace("+psycopg", "")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("scos",)
    assert not _port_open(pg.port)
