"""A cluster on a Redis that speaks only TLS and requires a password: a bare
``rediss://:password@host:port/0`` is enough for the worker, the client, the result backend
and the defaults jobsys derives (the result URL keeps the broker URL's query)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobsys import RunState
from jobsys.base import config, embedded
from jobsys.engine import broker
from tests.cluster import cluster
from tests.waiting import eventually

pytestmark = pytest.mark.integration

PASSWORD = "tls-test-password"


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, the certificate being its own authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A TLS-only Redis with a password; its certificate's authority is the only one this
    process and its children trust (``SSL_CERT_FILE``)."""
    binary = shutil.which("redis-server")  # the one bundled with jobsys has no TLS
    if binary is None:
        pytest.skip(reason="no redis-server on PATH to run with TLS")
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    port = embedded.free_port()
    output = tmp_path / "redis.out"
    argv = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    argv += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    argv += ["--tls-auth-clients", "no", "--requirepass", PASSWORD]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    with output.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    try:
        if not _ready(url, proc):
            said = output.read_text(errors="replace")
            if proc.poll() is not None and "tls" in said.lower():
                pytest.skip(reason=f"{binary} is built without TLS: {said.strip()[-200:]}")
            raise AssertionError(f"the TLS redis-server did not answer in 20 s:\n{said}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    def answers() -> bool:
        if proc.poll() is not None:
            return True  # (it exited: not ready, said below)
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())

    try:
        eventually(answers, 20, what=f"{url} to answer PING", ignoring=(redis.RedisError,))
    except AssertionError:
        return False
    return proc.poll() is None


@pytest.mark.backend_independent
def test_a_bare_rediss_url_verifies_the_server_and_keeps_its_query(tmp_path: Path) -> None:
    bare = config.Settings.from_env(
        {"JOBSYS_HOME": str(tmp_path), "JOBSYS_BROKER_URL": "rediss://:pw@h:6380/0"}
    )
    conf = broker.celery_config(bare)
    assert conf["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert conf["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    given = "rediss://:pw@h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem"
    explicit = config.Settings.from_env({"JOBSYS_HOME": str(tmp_path), "JOBSYS_BROKER_URL": given})
    assert explicit.resolved_result_url() == given.replace("/0?", "/1?")
    conf = broker.celery_config(explicit)
    assert "broker_use_ssl" not in conf and "redis_backend_use_ssl" not in conf
    plain = config.Settings.from_env(
        {"JOBSYS_HOME": str(tmp_path), "JOBSYS_BROKER_URL": "redis://h:6379/0"}
    )
    assert "broker_use_ssl" not in broker.celery_config(plain)


def test_a_cluster_runs_over_tls_with_a_bare_rediss_url(
    tmp_path: Path, tls_redis: str, database_url: str | None
) -> None:
    with cluster(tmp_path, tls_redis, database_url) as c:
        assert c.broker_url.startswith("rediss://") and c.result_url.startswith("rediss://")
        c.start_worker("tls", concurrency=1)
        run_id = c.client.submit("examples.add", {"a": 2, "b": 3})
        record = c.wait_state(run_id, RunState.COMPLETED, timeout=60)
        assert record.output == 5
