"""Atlases on object storage, against a real S3-compatible server on 127.0.0.1 (moto's):
built, killed and resumed, or shared by two processes, they equal a local-disk atlas;
a missing bucket, refused credentials or an unreachable endpoint is one line, exit 2,
and nothing written, for atlas build, index and explore."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from convis_jax.errors import InputError
from tests.atlas.conftest import free_port, keys, start_moto, stop
from tests.atlas.test_atlas_processes import ROOT, contents, finish, start_build


def test_storage_objects_on_a_folder_and_on_s3(s3, tmp_path):
    """The interface the atlas writes through: create only where nothing is, replace only
    over the version read, list by prefix; the same answers from a folder and from S3."""
    from convis_jax.atlas.storage import Storage

    for storage in (Storage(tmp_path / "place"), Storage(f"s3://{s3.bucket}/some/prefix")):
        storage.check()
        assert storage.read("a/b.json") == (None, storage.read("a/b.json")[1])
        assert storage.create("a/b.json", b"one")
        assert not storage.create("a/b.json", b"two")
        data, generation = storage.read("a/b.json")
        assert data == b"one"
        assert storage.replace("a/b.json", b"three", generation)
        assert not storage.replace("a/b.json", b"four", generation)  # a stale version
        assert storage.read("a/b.json")[0] == b"three"
        storage.write("a/c.json", b"{}")
        storage.write("ab.json", b"{}")
        assert storage.list("a/") == ["a/b.json", "a/c.json"]
    assert sorted(keys(s3, s3.bucket)) == ["some/prefix/a/b.json", "some/prefix/a/c.json",
                                           "some/prefix/ab.json"]
    assert sorted(p.relative_to(tmp_path / "place").as_posix()
                  for p in (tmp_path / "place").rglob("*") if p.is_file()) == [
        "a/b.json", "a/c.json", "ab.json"]


def test_claims_of_two_processes_merge(s3):
    """Two processes claiming different images at the same moment: both lists end up in the
    manifest (each replaces it only over the version it read, and retries otherwise)."""
    from convis_jax.atlas import store
    from convis_jax.atlas.storage import Storage

    storage = Storage(f"s3://{s3.bucket}/atlas")
    base = {"format": store.FORMAT, "version": store.VERSION, "model": {"fingerprint": "f"},
            "grid": {}, "padding": "noise", "seed": 0, "dtype": "float16", "sources": []}
    store.claim(storage, dict(base, images=["a"]), part="part-0")
    stale = storage.read(store.MANIFEST)[1]
    # Process 1 claims "b"; process 2, which read the manifest before, must not erase it.
    store.claim(storage, dict(base, images=["b"]), part="part-1")
    assert not storage.replace(store.MANIFEST, b"{}", stale)
    merged = store.claim(storage, dict(base, images=["c", "a"]), part="part-2")
    assert merged["images"] == ["a", "b", "c"]
    assert merged["parts"] == ["part-0", "part-1", "part-2"]
    assert json.loads(s3.get_object(Bucket=s3.bucket, Key="atlas/atlas.json")["Body"].read()
                      ) == merged


def _cells(atlas):
    return atlas.cells(None, None)


def test_s3_build_killed_and_resumed_equals_a_local_build(tiny_checkpoint, reference, s3):
    photos, local = reference
    url = f"s3://{s3.bucket}/runs/atlas"
    process = start_build(photos, url, tiny_checkpoint[0], "--batch", "1")
    deadline = time.monotonic() + 240
    while len(keys(s3, s3.bucket, "runs/atlas/part-0/done/")) < 2:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = len(keys(s3, s3.bucket, "runs/atlas/part-0/done/"))
    assert 2 <= recorded < 8, "the build ended before it could be killed"
    _, log = finish(start_build(photos, url, tiny_checkpoint[0], "--batch", "1"))
    assert f"{8 - recorded} of its 8 images to encode" in log
    atlas, records, windows, images = contents(url)
    want_atlas, want_records, want_windows, want_images = contents(local)
    assert atlas.pending_ids == () and records == want_records
    np.testing.assert_array_equal(windows, want_windows)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(_cells(atlas), _cells(want_atlas))
    assert atlas.root == url and str(atlas.storage) == url


def test_two_processes_sharing_an_s3_atlas_equal_one_local_process(tiny_checkpoint, reference,
                                                                    s3):
    photos, local = reference
    url = f"s3://{s3.bucket}/shared"
    port = free_port()
    # Batches of 1, as the reference's: then even the whole-image embeddings are identical.
    processes = [start_build(photos, url, tiny_checkpoint[0], "--batch", "1", "--coordinator",
                             f"127.0.0.1:{port}", "--num-processes", "2", "--process-id",
                             str(i)) for i in range(2)]
    logs = [finish(p)[1] for p in processes]
    assert "process 0 of 2, 4 of its 4 images to encode" in logs[0]
    assert "process 1 of 2, 4 of its 4 images to encode" in logs[1]
    atlas, records, windows, images = contents(url)
    assert [r.part for r in atlas.records()] == ["part-0", "part-1"] * 4
    manifest = json.loads(s3.get_object(Bucket=s3.bucket, Key="shared/atlas.json")["Body"].read())
    assert sorted(manifest["parts"]) == ["part-0", "part-1"]  # listed in the order they claimed
    want_atlas, want_records, want_windows, want_images = contents(local)
    assert records == want_records
    np.testing.assert_array_equal(windows, want_windows)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(_cells(atlas), _cells(want_atlas))


def _run_cli(*args, env):
    """(exit code, stderr lines) of `convis-jax ARGS` in a subprocess with `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full.update(env, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "convis_jax.cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def checking_server():
    """A moto server that checks credentials; its first request (creating the bucket)
    is the only one it lets through unsigned."""
    import boto3

    process, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "1"})
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                 region_name="us-east-1").create_bucket(Bucket="guarded")
    yield endpoint
    stop(process)


def _stored_keys(endpoint: str) -> list[str]:
    """Every object key the server holds, from moto's own state (no credentials needed)."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as answer:
        state = json.loads(answer.read())
    return [item["name"] for item in state["s3"].get("FakeKey", [])]


@pytest.mark.parametrize("case", ["missing bucket", "refused credentials", "no endpoint",
                                  "bad url"])
def test_unusable_object_storage_is_one_line_exit_2_and_nothing_written(
        case, tiny_checkpoint, s3, s3_server, checking_server, tmp_path):
    from tests.atlas.test_atlas_processes import write_photos

    write_photos(tmp_path / "photos", 2)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server}
    url, expected = f"s3://{s3.bucket}-gone/atlas", "does not exist"
    if case == "refused credentials":
        env.update(AWS_ENDPOINT_URL=checking_server, AWS_ACCESS_KEY_ID="AKIANOTAKEY")
        url, expected = "s3://guarded/atlas", "access refused"
    elif case == "no endpoint":
        env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
        url, expected = f"s3://{s3.bucket}/atlas", "cannot reach"
    elif case == "bad url":
        url, expected = "s3://Not_A_Bucket/atlas", "expected a bucket name"
    before = time.monotonic()
    for args in (["atlas", "build", str(tmp_path / "photos"), "--out", url, "--model",
                  str(tiny_checkpoint[0]), "--quiet"],
                 ["atlas", "explore", url, "--out", str(tmp_path / "page"), "--quiet"],
                 ["atlas", "index", url, "--quiet"]):
        code, lines = _run_cli(*args, env=env)
        assert code == 2, lines
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
        assert url.split("/")[2] in lines[0] or case == "bad url", lines
    assert time.monotonic() - before < 120
    assert not (tmp_path / "page").exists()
    if case == "refused credentials":
        assert _stored_keys(checking_server) == []
    elif case == "missing bucket":
        assert f"{s3.bucket}-gone" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    else:
        assert keys(s3, s3.bucket) == []


def test_unsupported_places_are_input_errors(tmp_path):
    from convis_jax.atlas.storage import Storage

    for bad in ("ftp://host/atlas", "s3://", "gs:///prefix", "az://container/atlas"):
        with pytest.raises(InputError, match="expected a"):
            Storage(bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="must be a folder"):
        Storage(tmp_path / "file")
