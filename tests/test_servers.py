"""The real Redis and Postgres servers of ``tests/servers.py`` start, answer and belong to the session."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from tests.servers import PostgresServer


def test_redis_server_answers_ping_and_keeps_a_key(redis_server: str) -> None:
    url = urlsplit(redis_server)
    assert (url.scheme, url.hostname, url.path) == ("redis", "127.0.0.1", "/0")
    assert url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(b"SET ocean-test-key 1\r\nGET ocean-test-key\r\n")
        answer = b""
        while answer.count(b"\r\n") < 3:
            answer += sock.recv(64)
    assert answer == b"+OK\r\n$1\r\n1\r\n"


def test_postgres_server_creates_databases_on_loopback(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.create_database("servers_smoke")
    url = urlsplit(dsn)
    assert (url.hostname, url.path) == ("127.0.0.1", "/servers_smoke")
    assert postgres_server.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    assert postgres_server.psql("SELECT current_database()", "servers_smoke").strip() == "servers_smoke"
