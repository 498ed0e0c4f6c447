"""URIs to ``pyarrow.fs`` filesystems, and the few file operations the jobs need.

One code path for local disks and ``s3://`` (AWS or any S3-compatible store). Writes are
atomic from a reader's point of view: local files are written under a temporary name
(``_tmp-NAME-UUID.partial``) and renamed; an S3 object only appears once its upload completes. Readers built on
``pyarrow.dataset`` skip names starting with "." or "_", which is where temporaries, resume
state (``_state/``) and the ``_SUCCESS`` manifest live.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.config import StorageConfig


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

    def join(self, *parts: str) -> "Location":
        p = posixpath.join(self.path, *parts)
        return Location(self.fs, p, posixpath.join(self.uri, *parts))


def s3_filesystem(cfg: StorageConfig | None = None) -> pafs.S3FileSystem:
    cfg = cfg or StorageConfig()
    endpoint = cfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kw: dict = {"region": cfg.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if endpoint:
        scheme = "https"
        if "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        kw.update(endpoint_override=endpoint.rstrip("/"), scheme=scheme)
    if cfg.s3_access_key and cfg.s3_secret_key:
        kw.update(access_key=cfg.s3_access_key, secret_key=cfg.s3_secret_key)
    kw.update(connect_timeout=10, request_timeout=60)
    return pafs.S3FileSystem(**kw)


def resolve(uri: str, cfg: StorageConfig | None = None) -> Location:
    """``s3://bucket/key`` or a local path (``file://`` allowed) -> Location."""
    if not uri:
        raise StorageError("empty URI")
    if uri.startswith("s3://"):
        return Location(s3_filesystem(cfg), uri[len("s3://"):].rstrip("/"), uri.rstrip("/"))
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"unsupported URI scheme in {uri} (use a local path or s3://)")
    path = os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))
    return Location(pafs.LocalFileSystem(), path, path)


def info(loc: Location) -> pafs.FileInfo:
    try:
        return loc.fs.get_file_info(loc.path)
    except OSError as e:
        raise StorageError(f"cannot reach {loc.uri}: {_short(e)}") from None


def exists(loc: Location) -> bool:
    return info(loc).type != pafs.FileType.NotFound


def makedirs(loc: Location) -> None:
    try:
        loc.fs.create_dir(loc.path, recursive=True)
    except OSError as e:
        raise StorageError(f"cannot create {loc.uri}: {_short(e)}") from None


def list_files(loc: Location, suffix: str = "") -> list[str]:
    """Paths of files under ``loc`` (recursive), skipping hidden and underscore names."""
    if not exists(loc):
        return []
    sel = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    out = []
    for fi in loc.fs.get_file_info(sel):
        rel = posixpath.relpath(fi.path, loc.path)
        if fi.type == pafs.FileType.File and fi.path.endswith(suffix) and not any(
            part.startswith((".", "_")) for part in rel.split("/")
        ):
            out.append(fi.path)
    return sorted(out)


def read_bytes(loc: Location) -> bytes:
    try:
        with loc.fs.open_input_stream(loc.path) as fh:
            return fh.read()
    except FileNotFoundError:
        raise StorageError(f"not found: {loc.uri}") from None
    except OSError as e:
        raise StorageError(f"cannot read {loc.uri}: {_short(e)}") from None


def write_bytes(loc: Location, data: bytes) -> None:
    """Atomic write: readers see the old object or the whole new one, never a part."""
    if isinstance(loc.fs, pafs.LocalFileSystem):
        parent = posixpath.dirname(loc.path)
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f"{TEMP_PREFIX}{posixpath.basename(loc.path)}-{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, loc.path)
        return
    try:
        with loc.fs.open_output_stream(loc.path) as fh:
            fh.write(data)
    except OSError as e:
        raise StorageError(f"cannot write {loc.uri}: {_short(e)}") from None


def write_parquet(loc: Location, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    write_bytes(loc, buf.getvalue().to_pybytes())


def remove_stale_temporaries(loc: Location, older_than_s: float = 600.0) -> int:
    """Delete temporaries directly under ``loc`` older than ``older_than_s`` (a writer still
    busy with one is younger); returns how many."""
    if not isinstance(loc.fs, pafs.LocalFileSystem) or not os.path.isdir(loc.path):
        return 0
    import time

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
        loc.fs.delete_file(loc.path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if "not found" not in str(e).lower() and "NoSuchKey" not in str(e):
            raise StorageError(f"cannot delete {loc.uri}: {_short(e)}") from None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]
