"""Where an atlas lives: a local folder, or a prefix in S3 or Google Cloud Storage.

Everything an atlas writes, its zarr arrays and its small JSON files
(manifest, records), goes through tensorstore's own key-value stores:
`file` for a folder, `s3` for `s3://BUCKET/PREFIX`, `gcs` for
`gs://BUCKET/PREFIX`. No other storage library is involved.

Credentials and endpoints come from the standard places. S3:
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), else
`AWS_PROFILE`, else the AWS default chain (profile files, instance roles);
`AWS_REGION` (or `AWS_DEFAULT_REGION`); `AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL` for an S3-compatible server. GCS: application default
credentials (tensorstore's own lookup; `TENSORSTORE_GCS_HTTP_URL` points it
at another server).

Writes are whole objects (an S3 or GCS PUT, a file renamed into place), so a
reader never sees half of one. Objects that several processes may touch are
written conditionally: `create` writes only where nothing is (S3's
`If-None-Match: *`, tensorstore's `use_conditional_write`), `replace` only
over the version that was read (`If-Match`), so no process ever overwrites
what another wrote without having read it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from convis_jax.errors import InputError, one_line

# tensorstore's storage generation of a missing key: a write conditioned on it
# happens only where nothing is stored (tests/atlas/test_storage.py checks it).
NO_VALUE = b"\x02"
SCHEMES = ("s3", "gs")
# A bad endpoint or refused credentials should fail in a second, not after
# tensorstore's default of 32 retries with back-off: `check` asks once with these.
CHECK_RETRIES = {"max_retries": 2, "initial_delay": "0.2s", "max_delay": "1s"}


def _ts():
    import tensorstore

    return tensorstore


def is_url(location) -> bool:
    """Whether `location` names object storage (`scheme://...`) rather than a local path."""
    return isinstance(location, str) and "://" in location


def as_storage(location) -> Storage:
    """`location` itself when it is a `Storage`, else the `Storage` it names."""
    return location if isinstance(location, Storage) else Storage(location)


def is_unreachable(err: Exception) -> bool:
    """Whether a tensorstore error says the storage could not be used (a missing bucket,
    refused credentials, an unreachable endpoint) rather than that the data is bad."""
    text = str(err)
    return any(word in text for word in ("PERMISSION_DENIED", "UNAUTHENTICATED", "UNAVAILABLE",
                                         "CURL error", "NoSuchBucket", "AccessDenied",
                                         "retry attempts failed"))


class Storage:
    """An atlas's place: a local folder or an object-storage prefix, one interface for both.

    Keys are "/"-separated paths relative to the place ("atlas.json",
    "part-0/done/000000000.json").

    Args:
        location: a folder (str or Path), `s3://BUCKET/PREFIX` or `gs://BUCKET/PREFIX`.

    Attributes:
        url: the place as the user named it (a folder's path, or the URL).
        local: the folder, or None on object storage.

    Raises:
        InputError: an unsupported scheme, a URL without a bucket, or a path that is a file.
    """

    def __init__(self, location):
        self.local: Path | None = None
        if isinstance(location, Storage):
            location = location.url
        if is_url(location):
            scheme, rest = location.split("://", 1)
            bucket, _, prefix = rest.partition("/")
            if scheme not in SCHEMES:
                raise InputError(f"expected a folder, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX, "
                                 f"found {location!r}")
            if not bucket or not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", bucket):
                raise InputError(f"expected a bucket name (lower-case letters, digits, '.', "
                                 f"'-') in {location!r}, found {bucket!r}")
            prefix = prefix.strip("/")
            self.scheme, self.bucket, self.prefix = scheme, bucket, prefix
            self.url = f"{scheme}://{bucket}/{prefix}".rstrip("/")
        else:
            path = Path(location).expanduser()
            if path.exists() and not path.is_dir():
                raise InputError(f"the atlas must be a folder, found a file at {str(path)!r}")
            self.scheme, self.bucket, self.prefix = "file", None, str(path.resolve())
            self.url, self.local = str(location), path
        self._context = _ts().Context(self._context_spec())
        self._kvstore = None

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def __str__(self) -> str:
        return self.url

    # ------------------------------------------------------------------ specs

    def _context_spec(self, retries: dict | None = None) -> dict:
        if self.scheme == "s3":
            return {"s3_request_retries": retries} if retries else {}
        if self.scheme == "gs":
            return {"gcs_request_retries": retries} if retries else {}
        return {}

    def spec(self, key: str = "") -> dict:
        """The tensorstore kvstore spec of `key` (a folder key ends with "/")."""
        if self.scheme == "file":
            return {"driver": "file", "path": os.path.join(self.prefix, key)}
        path = f"{self.prefix}/{key}" if self.prefix else key
        if self.scheme == "gs":
            return {"driver": "gcs", "bucket": self.bucket, "path": path}
        spec = {"driver": "s3", "bucket": self.bucket, "path": path,
                "use_conditional_write": True}
        env = os.environ
        if env.get("AWS_ACCESS_KEY_ID"):
            spec["aws_credentials"] = {"type": "environment"}
        elif env.get("AWS_PROFILE"):
            spec["aws_credentials"] = {"type": "profile", "profile": env["AWS_PROFILE"]}
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            spec["endpoint"] = endpoint
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            spec["aws_region"] = region
        return spec

    @property
    def context(self):
        """The tensorstore Context every store of this place shares (request limits, caches)."""
        return self._context

    def _store(self):
        if self._kvstore is None:
            folder = self.spec("")
            folder["path"] = folder["path"].rstrip("/") + "/" if folder["path"] else ""
            try:
                self._kvstore = _ts().KvStore.open(folder, context=self._context).result()
            except ValueError as err:
                raise self.error(err, "open") from None
        return self._kvstore

    def where(self, key: str = "") -> str:
        """How messages name `key`: a local path, or the object's URL."""
        if self.local is not None:
            return str(self.local / key) if key else str(self.local)
        return f"{self.url}/{key}" if key else self.url

    # ------------------------------------------------------------------ errors

    def error(self, err: Exception, doing: str, key: str = "") -> InputError:
        """A tensorstore failure as a one-line `InputError` saying what and where."""
        text = one_line(str(err))
        text = re.sub(r"\s*\[(http_response_body|x-amzn?-[a-z-]+|source locations)=.*", "", text)
        where = self.where(key)
        if "NoSuchBucket" in text or (self.scheme == "gs" and "NOT_FOUND" in text
                                       and "bucket" in text.lower()):
            return InputError(f"cannot {doing} {where}: the bucket {self.bucket!r} does not "
                              f"exist (create it first)")
        if "PERMISSION_DENIED" in text or "UNAUTHENTICATED" in text or "AccessDenied" in text:
            reason = text.split(":", 1)[-1].strip()
            return InputError(f"cannot {doing} {where}: access refused ({reason[:200]}); check "
                              f"the credentials ({self._credential_hint()})")
        if "CURL error" in text or "UNAVAILABLE" in text or "retry attempts failed" in text:
            endpoint = self.spec().get("endpoint", "the storage service")
            return InputError(f"cannot {doing} {where}: cannot reach {endpoint} "
                              f"({text[:200]})")
        return InputError(f"cannot {doing} {where}: {text[:300]}")

    def _credential_hint(self) -> str:
        if self.scheme == "s3":
            return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        if self.scheme == "gs":
            return "application default credentials: gcloud auth application-default login"
        return "file permissions"

    def check(self) -> None:
        """Asks the place once, quickly: a missing bucket, refused credentials or an
        unreachable endpoint is an `InputError` before anything is written.

        Raises:
            InputError: one line naming the place and the reason.
        """
        if self.scheme == "file":
            return
        ts = _ts()
        folder = self.spec("")
        folder["path"] = folder["path"].rstrip("/") + "/" if folder["path"] else ""
        try:
            probe = ts.KvStore.open(folder, context=ts.Context(
                self._context_spec(CHECK_RETRIES))).result()
            # A LIST request: unlike a read of a missing key, it fails for a missing bucket.
            probe.list(ts.KvStore.KeyRange("atlas.json", "atlas.json\0")).result()
        except ValueError as err:
            raise self.error(err, "open") from None

    # ------------------------------------------------------------------ objects

    def read(self, key: str) -> tuple[bytes | None, bytes]:
        """(the object's bytes, or None where there is none; its generation for `replace`)."""
        try:
            result = self._store().read(key).result()
        except ValueError as err:
            raise self.error(err, "read", key) from None
        value = result.value if result.state == "value" else None
        return value, result.stamp.generation

    def read_json(self, key: str):
        """The JSON object at `key`, or None where there is none.

        Raises:
            InputError: unreadable JSON, naming the object.
        """
        data, _ = self.read(key)
        if data is None:
            return None
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"expected JSON at {self.where(key)!r}, found unreadable bytes "
                             f"({err})") from None

    def _write(self, key: str, data: bytes, if_equal: bytes | None) -> bool:
        try:
            stamp = self._store().write(key, data, if_equal=if_equal).result()
        except ValueError as err:
            raise self.error(err, "write", key) from None
        return stamp.generation != b""  # tensorstore's answer to a failed condition

    def write(self, key: str, data: bytes) -> None:
        """Writes a whole object (for objects only this process writes)."""
        self._write(key, data, None)

    def create(self, key: str, data: bytes) -> bool:
        """Writes `data` only where `key` holds nothing; False (nothing written) otherwise."""
        return self._write(key, data, NO_VALUE)

    def replace(self, key: str, data: bytes, generation: bytes) -> bool:
        """Writes `data` only over the version `generation` (from `read`); False (nothing
        written) when another process wrote `key` since."""
        return self._write(key, data, generation)

    def list(self, prefix: str) -> list[str]:
        """The keys that start with `prefix` (a folder key ends with "/"), sorted."""
        ts = _ts()
        try:
            found = self._store().list(ts.KvStore.KeyRange(prefix.encode(),
                                                            prefix.encode() + b"\xff")).result()
        except ValueError as err:
            raise self.error(err, "list", prefix) from None
        return sorted(k.decode() if isinstance(k, bytes) else k for k in found)

    def folders(self, pattern: str) -> list[str]:
        """A local atlas's top-level folders matching a glob `pattern`; [] on object storage
        (which has no folders: there the manifest lists them)."""
        if self.local is None or not self.local.is_dir():
            return []
        return sorted(p.name for p in self.local.glob(pattern) if p.is_dir())
