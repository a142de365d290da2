"""TLS served by ``lightly-server`` itself (``--tls-cert``/``--tls-key``), and clients that trust a private CA.

A CA and a server certificate for 127.0.0.1 are made here with ``cryptography``; the real server serves
HTTPS with them; the unmodified lightly client (``LIGHTLY_CA_CERTS``), the operator's ``LightlyApi`` and
the worker's ``WorkerApi`` (both ``LIGHTLY_CA_CERTS``) call it. Plain HTTP to the TLS port gets nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import fresh_database
from lightly_devkit.net import PROXY_VARS, free_port
from lightly_devkit.processes import stop_process
from lightly_devkit.servers import SERVER_CLI, create_token, loopback_env


def _write_pki(folder: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key): a CA and a certificate it signed for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightly test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightly-server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem, cert_pem, key_pem


def trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


@dataclass
class TlsServer:
    url: str  # https://127.0.0.1:PORT
    port: int
    database_url: str
    proc: subprocess.Popen
    log: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(*_write_pki(tmp_path_factory.mktemp("pki")))


def serve_tls(database_url: str, pki: Pki, log: Path, *extra: str) -> TlsServer:
    """``lightly-server serve --tls-cert --tls-key`` on a free port, healthy over HTTPS when this returns."""
    port = free_port()
    cmd = [*SERVER_CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--database", database_url]
    cmd += ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--log-level", "warning", *extra]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=loopback_env())
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", verify=trust(pki.ca), timeout=1, trust_env=False).status_code == 200:
                return TlsServer(url, port, database_url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError(f"server did not become healthy over HTTPS:\n{log.read_text()}")


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    tmp = tmp_path_factory.mktemp("tls-sqlite")
    with fresh_database("sqlite", tmp) as url:
        server = serve_tls(url, pki, tmp / "server.log")
        try:
            yield server
        finally:
            stop_process(server.proc)


@pytest.fixture
def token(tls_server: TlsServer) -> str:
    return create_token(tls_server.database_url, f"user-{secrets.token_hex(4)}")


# ---------------------------------------------------------------------------- the server


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server: TlsServer, pki: Pki, token: str) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/v1/datasets", params={"token": token}, trust_env=False)
    # the same request over HTTPS is answered
    r = httpx.get(f"{tls_server.url}/v1/datasets", params={"token": token}, verify=trust(pki.ca))
    assert r.status_code == 200, r.text


def test_the_lightly_client_trusts_the_ca_of_lightly_ca_certs(
    tls_server: TlsServer, pki: Pki, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightly.api import ApiWorkflowClient

    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", tls_server.url)
    monkeypatch.setenv("LIGHTLY_DID_VERSION_CHECK", "True")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIGHTLY_CA_CERTS", str(pki.ca))
    client = ApiWorkflowClient(token=token)
    name = f"tls-{secrets.token_hex(3)}"
    client.create_dataset(name)
    assert client.dataset_id
    assert name in [d.name for d in client.get_datasets()]

    monkeypatch.delenv("LIGHTLY_CA_CERTS")  # without it: the system's CAs, which do not know ours
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        ApiWorkflowClient(token=token).get_datasets()


def test_the_operator_trusts_the_ca_of_its_setting(tls_server: TlsServer, pki: Pki, token: str) -> None:
    from lightly_operator.api_access import ApiAccess
    from lightly_operator.lightly_api import ApiUnreachable, LightlyApi
    from lightly_operator.settings import OperatorSettings, SettingsError

    async def workers(settings: OperatorSettings) -> list:
        access = ApiAccess(settings, kube=None)  # type: ignore[arg-type]  # the HTTP pool only
        try:
            return await LightlyApi(tls_server.url, token, 10, access.http).workers()
        finally:
            await access.close()

    trusting = OperatorSettings.from_env({"LIGHTLY_CA_CERTS": str(pki.ca), "LIGHTLY_SERVER_LOCATION": tls_server.url})
    assert asyncio.run(workers(trusting)) == []
    with pytest.raises(ApiUnreachable) as err:
        asyncio.run(workers(OperatorSettings.from_env({"LIGHTLY_SERVER_LOCATION": tls_server.url})))
    message = str(err.value)
    assert "not trusted" in message and "LIGHTLY_CA_CERTS" in message and token not in message
    # a CA file that is not there is a setting error at start, not a failure at the first call
    with pytest.raises(SettingsError, match=r"LIGHTLY_CA_CERTS=.*no such file"):
        OperatorSettings.from_env({"LIGHTLY_CA_CERTS": str(pki.ca) + ".missing"})
    with pytest.raises(SettingsError, match="PEM"):
        OperatorSettings(ca_certs=str(pki.cert.parent / "server.key"))


def test_the_worker_trusts_the_ca_of_lightly_ca_certs(tls_server: TlsServer, pki: Pki, token: str) -> None:
    from lightly_worker.api import ApiError, WorkerApi
    from lightly_worker.config import ConfigError, tls_verify

    api = WorkerApi(tls_server.url, token, timeout=10, verify=tls_verify({"LIGHTLY_CA_CERTS": str(pki.ca)}))
    try:
        worker_id = api.register("tls-worker", ["tls"], "1.0.0")
        assert api.worker(worker_id).name == "tls-worker"
    finally:
        api.close()

    stop = threading.Event()
    timer = threading.Timer(20, stop.set)  # the old worker retried an untrusted certificate forever
    timer.start()
    untrusting = WorkerApi(tls_server.url, token, timeout=10, stop=stop, max_backoff=0.5, verify=tls_verify({}))
    try:
        with pytest.raises(ApiError) as err:
            untrusting.register("tls-worker-2", [], "1.0.0")
    finally:
        timer.cancel()
        untrusting.close()
    message = str(err.value)
    assert "not trusted" in message and "LIGHTLY_CA_CERTS" in message and token not in message
    with pytest.raises(ConfigError, match="no such file"):
        tls_verify({"LIGHTLY_CA_CERTS": str(pki.ca) + ".missing"})


def test_the_worker_cli_reports_an_untrusted_server_and_exits(tls_server: TlsServer, token: str) -> None:
    env = {**loopback_env(), "LIGHTLY_SERVER_LOCATION": tls_server.url, "LIGHTLY_TOKEN": token}
    env.pop("LIGHTLY_CA_CERTS", None)
    out = subprocess.run(
        [*SERVER_CLI[:2], "lightly_worker.cli", "worker.name=tls-cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert "not trusted" in out.stderr and "LIGHTLY_CA_CERTS" in out.stderr
    assert token not in out.stderr + out.stdout


# ---------------------------------------------------------------------------- bad settings at start


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("cert-only", "--tls-cert needs --tls-key"),
        ("key-only", "--tls-key needs --tls-cert"),
        ("missing", "no such file"),
        ("mismatch", "cannot be used"),
    ],
)
def test_bad_tls_settings_stop_the_server_with_a_clear_message(
    pki: Pki, tmp_path: Path, which: str, message: str
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other_key = tmp_path / "other.key"
    other_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    flags = {
        "cert-only": ["--tls-cert", str(pki.cert)],
        "key-only": ["--tls-key", str(pki.key)],
        "missing": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pki.key)],
        "mismatch": ["--tls-cert", str(pki.cert), "--tls-key", str(other_key)],
    }[which]
    out = subprocess.run(
        [*SERVER_CLI, "serve", "--database", f"sqlite:///{tmp_path / 'x.sqlite3'}", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=loopback_env(),
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr


def test_the_env_settings_serve_tls_too(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    env = {**loopback_env(), "LIGHTLY_SERVER_TLS_CERT": str(pki.cert), "LIGHTLY_SERVER_TLS_KEY": str(pki.key)}
    cmd = [*SERVER_CLI, "serve", "--port", str(port), "--database", f"sqlite:///{tmp_path / 'e.sqlite3'}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust(pki.ca), timeout=1, trust_env=False)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert r.status_code == 200
    finally:
        stop_process(proc)


@pytest.mark.postgres
def test_every_process_of_processes_n_serves_tls(pki: Pki, tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        server = serve_tls(url, pki, tmp_path / "server.log", "--processes", "2")
        try:
            token = create_token(url, "procs")
            # new connections each time: the kernel spreads them over both processes' accepts
            for _ in range(20):
                r = httpx.get(f"{server.url}/v1/datasets", params={"token": token}, verify=trust(pki.ca), timeout=10)
                assert r.status_code == 200
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://127.0.0.1:{server.port}/healthz", trust_env=False, timeout=5)
        finally:
            stop_process(server.proc)
