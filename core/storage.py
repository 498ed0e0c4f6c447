"""URIs to ``pyarrow.fs`` filesystems, and the few file operations the jobs need.

One code path for local disks and ``s3://`` (AWS or any S3-compatible store). Writes are
atomic from a reader's point of view: local files are written under a temporary name
(``_tmp-NAME-UUID.partial``) and renamed; an S3 object only appears once its upload completes. Readers built on
``pyarrow.dataset`` skip names starting with "." or "_", which is where temporaries, resume
state (``_state/``) and the ``_SUCCESS`` manifest live.
"""

from __future__ import annotations

import os
import re
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.config import StorageConfig
from core.errors import one_line

T = TypeVar("T")


# Local temporaries: "_" keeps them out of pyarrow/Spark/datasets listings, and the suffix out of
# a `*.parquet` glob (DuckDB); remove_stale_temporaries() clears those a kill left behind.
TEMP_PREFIX, TEMP_SUFFIX = "_tmp-", ".partial"


class StorageError(OSError):
    """A URI cannot be used (bad scheme, unreachable store, missing bucket); one line."""


@dataclass
class Location:
    fs: pafs.FileSystem
    path: str  # filesystem path (bucket/key for S3)
    uri: str
    cfg: StorageConfig | None = field(default=None, compare=False, repr=False)  # S3: for boto3 calls

    def join(self, *parts: str) -> "Location":
        p = posixpath.join(self.path, *parts)
        return Location(self.fs, p, posixpath.join(self.uri, *parts), self.cfg)


def _s3_endpoint(cfg: StorageConfig) -> str | None:
    return cfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _s3_region(cfg: StorageConfig) -> str:
    return cfg.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def s3_filesystem(cfg: StorageConfig | None = None) -> pafs.S3FileSystem:
    cfg = cfg or StorageConfig()
    endpoint = _s3_endpoint(cfg)
    kw: dict = {"region": _s3_region(cfg)}
    if endpoint:
        scheme = "https"
        if "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        kw.update(endpoint_override=endpoint.rstrip("/"), scheme=scheme)
    if cfg.s3_access_key and cfg.s3_secret_key:
        kw.update(access_key=cfg.s3_access_key, secret_key=cfg.s3_secret_key)
    kw.update(connect_timeout=10, request_timeout=60)
    return pafs.S3FileSystem(**kw)


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(/*)(.*)$", re.S)
S3_ALIASES = ("s3", "s3a", "s3n")  # Hadoop's names for the same store are accepted, any case
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def resolve(uri: str, cfg: StorageConfig | None = None) -> Location:
    """``s3://bucket/key`` or a local path (``file://`` allowed) -> Location.

    Accepted spellings: ``s3://``, ``S3://``, ``s3a://`` and ``s3n://`` all mean S3. A URI that
    looks like a typo of one (``s3:/bucket``, ``s3:bucket``, ``s3://`` with no bucket, a bucket
    name S3 would refuse) is an error here, not a local folder named ``s3:`` or a listing of
    every bucket.
    """
    if not uri or not uri.strip():
        raise StorageError("empty URI")
    m = _SCHEME.match(uri)
    scheme = m.group(1).lower() if m else ""
    if m and scheme in S3_ALIASES:
        if m.group(2) != "//":
            raise StorageError(f"malformed S3 URI {uri!r}: write s3://bucket/path")
        bucket, _, key = m.group(3).partition("/")
        if not bucket:
            raise StorageError(f"S3 URI {uri!r} names no bucket: write s3://bucket/path")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise StorageError(f"S3 URI {uri!r}: {bucket!r} is not a valid bucket name "
                               f"(3-63 characters: lowercase letters, digits, dots, hyphens)")
        path = f"{bucket}/{key}".rstrip("/")
        return Location(s3_filesystem(cfg), path, f"s3://{path}", cfg or StorageConfig())
    if m and scheme == "file":
        if m.group(2) not in ("//", "///"):
            raise StorageError(f"malformed file URI {uri!r}: write file:///absolute/path or a plain path")
        local = "/" + m.group(3).lstrip("/")
        return Location(pafs.LocalFileSystem(), local, local)
    if m and (m.group(2) or scheme in ("gs", "gcs", "hdfs", "abfs", "az", "http", "https")):
        raise StorageError(f"unsupported URI scheme {scheme!r} in {uri!r} (use a local path or s3://bucket/path)")
    path = os.path.abspath(os.path.expanduser(uri))
    return Location(pafs.LocalFileSystem(), path, path)


# Object stores have bad moments (a throttled request, a reconnect, an endpoint that restarts):
# each remote call is retried with exponential backoff, about 45 s in all, before it fails.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0)


def _transient(e: OSError) -> bool:
    msg = str(e).lower()
    permanent = ("not found", "nosuchkey", "nosuchbucket", "access denied", "accessdenied", "forbidden",
                 "invalidaccesskeyid", "signaturedoesnotmatch")
    return not isinstance(e, FileNotFoundError) and not any(p in msg for p in permanent)


def _remote(loc: Location, what: str, fn: Callable[[], T]) -> T:
    """Run one storage call; on a remote store, retry transient failures with backoff.
    Local disks fail for good (permissions, a file where a folder should be): no retry."""
    local = isinstance(loc.fs, pafs.LocalFileSystem)
    for delay in (() if local else RETRY_DELAYS_S) + (None,):
        try:
            return fn()
        except FileNotFoundError:
            raise
        except OSError as e:
            if delay is None or not _transient(e):
                raise StorageError(f"cannot {what} {loc.uri}: {one_line(e)}") from None
            time.sleep(delay)
    raise AssertionError("unreachable")


def info(loc: Location) -> pafs.FileInfo:
    return _remote(loc, "reach", lambda: loc.fs.get_file_info(loc.path))


def exists(loc: Location) -> bool:
    return info(loc).type != pafs.FileType.NotFound


def makedirs(loc: Location) -> None:
    try:
        loc.fs.create_dir(loc.path, recursive=True)
    except OSError as e:
        raise StorageError(f"cannot create {loc.uri}: {one_line(e)}") from None


def list_files(loc: Location, suffix: str = "") -> list[str]:
    """Paths of files under ``loc`` (recursive), skipping hidden and underscore names."""
    if not exists(loc):
        return []
    sel = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    out = []
    for fi in _remote(loc, "list", lambda: loc.fs.get_file_info(sel)):
        rel = posixpath.relpath(fi.path, loc.path)
        if fi.type == pafs.FileType.File and fi.path.endswith(suffix) and not any(
            part.startswith((".", "_")) for part in rel.split("/")
        ):
            out.append(fi.path)
    return sorted(out)


def read_bytes(loc: Location) -> bytes:
    def get() -> bytes:
        with loc.fs.open_input_stream(loc.path) as fh:
            return fh.read()

    try:
        return _remote(loc, "read", get)
    except FileNotFoundError:
        raise StorageError(f"not found: {loc.uri}") from None


def write_bytes(loc: Location, data: bytes) -> None:
    """Atomic write: readers see the old object or the whole new one, never a part."""
    if isinstance(loc.fs, pafs.LocalFileSystem):
        parent = posixpath.dirname(loc.path)
        tmp = posixpath.join(parent, f"{TEMP_PREFIX}{posixpath.basename(loc.path)}-{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
        try:
            os.makedirs(parent, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, loc.path)
        except OSError as e:
            raise StorageError(f"cannot write {loc.uri}: {one_line(e)}") from None
        return

    def put() -> None:
        with loc.fs.open_output_stream(loc.path) as fh:
            fh.write(data)

    _remote(loc, "write", put)


def write_parquet(loc: Location, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(loc, buf.getvalue().to_pybytes())


def remove_stale_temporaries(loc: Location, older_than_s: float = 600.0) -> int:
    """Delete temporaries directly under ``loc`` older than ``older_than_s`` (a writer still
    busy with one is younger); returns how many."""
    if not isinstance(loc.fs, pafs.LocalFileSystem) or not os.path.isdir(loc.path):
        return 0
    n = 0
    for name in os.listdir(loc.path):
        p = os.path.join(loc.path, name)
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
            try:
                if time.time() - os.path.getmtime(p) > older_than_s:
                    os.remove(p)
                    n += 1
            except OSError:
                pass
    return n


def delete(loc: Location) -> None:
    try:
        _remote(loc, "delete", lambda: loc.fs.delete_file(loc.path))
    except FileNotFoundError:
        pass
    except StorageError as e:
        if "not found" not in str(e).lower() and "NoSuchKey" not in str(e):
            raise



# ---------------------------------------------------------------- conditional writes (S3)
# pyarrow.fs has no conditional create, so these go through boto3: S3's If-None-Match: * (create
# only when absent) and If-Match: ETAG (replace only the version read), which AWS S3, MinIO and
# moto honour. A store that answers NotImplemented raises ConditionalUnsupported.


class ConditionalUnsupported(StorageError):
    """This store does not do conditional writes."""


def _s3_client(loc: Location):  # noqa: ANN202 - a boto3 client
    import boto3
    from botocore.config import Config

    cfg = loc.cfg or StorageConfig()
    kw = {"region_name": _s3_region(cfg), "endpoint_url": _s3_endpoint(cfg),
          "config": Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=60)}
    if cfg.s3_access_key and cfg.s3_secret_key:
        kw.update(aws_access_key_id=cfg.s3_access_key, aws_secret_access_key=cfg.s3_secret_key)
    return boto3.client("s3", **kw)


def read_with_etag(loc: Location) -> tuple[bytes, str] | None:
    """(content, ETag) of an S3 object, None when it does not exist."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = loc.path.partition("/")
    try:
        r = _s3_client(loc).get_object(Bucket=bucket, Key=key)
        return r["Body"].read(), r["ETag"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise StorageError(f"cannot read {loc.uri}: {one_line(e)}") from None
    except BotoCoreError as e:
        raise StorageError(f"cannot read {loc.uri}: {one_line(e)}") from None


def put_if(loc: Location, data: bytes, etag: str | None = None) -> str | None:
    """Write an S3 object only if it is absent (``etag`` None) or still at ``etag``.
    Returns the new ETag, or None when the condition failed (another writer got there first)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = loc.path.partition("/")
    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        return _s3_client(loc).put_object(Bucket=bucket, Key=key, Body=data, **cond)["ETag"]
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey"):
            return None
        if code in ("NotImplemented", "501"):
            raise ConditionalUnsupported(f"{loc.uri}: the store does not do conditional writes") from None
        raise StorageError(f"cannot write {loc.uri}: {one_line(e)}") from None
    except BotoCoreError as e:
        raise StorageError(f"cannot write {loc.uri}: {one_line(e)}") from None
