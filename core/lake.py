"""The lake sink: a finished run's documents as one atomic commit to an Apache Iceberg table.

Why a commit per finished run, not per batch, and not Ray Data's ``write_iceberg``: the run's
Parquet folder (core.reconcile) already holds exactly one row per input id once the run ends,
through kills and reruns. The table mirrors that folder: one pyiceberg transaction deletes the
run's old rows (``run_id = RUN``) and appends the folder's rows, and the catalog swaps to the
new snapshot in one step. A reader of the current snapshot sees the whole previous version of
the run or the whole new one, never part of it; a job killed before the commit leaves the
table as it was, and the rerun commits. ``write_iceberg`` (Ray 2.60) commits once per Ray Data
write, leaves orphan data files behind a crash and has no delete-by-run step.

Rows are keyed on (``run_id``, ``id``), so runs of several models share one table. The
schema is :data:`core.records.DOCUMENT_SCHEMA` with ``run_id`` in front. Catalogs: a SQLite
file (``sqlite:///path/catalog.db``, needs a ``--warehouse``), a REST catalog (``http(s)://``)
or AWS Glue (``glue``); warehouses local or ``s3://`` with the job's S3 settings.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Iterator

import pyarrow as pa

from core.config import StorageConfig
from core.records import DOCUMENT_SCHEMA

LAKE_SCHEMA = pa.schema([pa.field("run_id", pa.string())] + list(DOCUMENT_SCHEMA),
                        metadata=DOCUMENT_SCHEMA.metadata)
COMMIT_TRIES = 5  # another writer committed first (another run into the same table): reload, redo


class LakeError(RuntimeError):
    """The table cannot be opened or written; one-line reason."""


def catalog_properties(catalog: str, warehouse: str | None, scfg: StorageConfig | None = None) -> dict[str, str]:
    """pyiceberg ``load_catalog`` properties for a catalog URI and a warehouse location."""
    scfg = scfg or StorageConfig()
    if catalog.startswith("sqlite:"):
        if not warehouse:
            raise LakeError("a SQLite catalog needs --warehouse (a folder or s3:// prefix for the table's files)")
        # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////absolute.db
        path = catalog[len("sqlite:///"):] if catalog.startswith("sqlite:///") else catalog[len("sqlite:"):]
        props = {"type": "sql", "uri": "sqlite:///" + os.path.abspath(path)}
    elif catalog.startswith(("http://", "https://")):
        props = {"type": "rest", "uri": catalog}
    elif catalog == "glue":
        props = {"type": "glue"}
    else:
        raise LakeError(f"--catalog {catalog!r}: use sqlite:///PATH.db, an http(s):// REST catalog or 'glue'")
    if warehouse:
        props["warehouse"] = warehouse if "://" in warehouse else "file://" + os.path.abspath(warehouse)
    endpoint = scfg.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = scfg.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    s3 = {"s3.endpoint": endpoint, "s3.region": region or ("us-east-1" if endpoint else None),
          "s3.access-key-id": scfg.s3_access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
          "s3.secret-access-key": scfg.s3_secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
          "s3.session-token": os.environ.get("AWS_SESSION_TOKEN")}
    props.update({k: v for k, v in s3.items() if v})
    return props


def open_table(name: str, catalog: str, warehouse: str | None = None, scfg: StorageConfig | None = None) -> Any:
    """The documents table ``NAMESPACE.NAME``, created (with its namespace) when missing."""
    from pyiceberg.catalog import load_catalog
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    if name.count(".") < 1 or not all(name.split(".")):
        raise LakeError(f"--table {name!r}: give NAMESPACE.NAME, e.g. corpus.documents")
    namespace = name.rsplit(".", 1)[0]
    try:
        cat = load_catalog("longwriter", **catalog_properties(catalog, warehouse, scfg))
        try:
            cat.create_namespace(namespace)
        except NamespaceAlreadyExistsError:
            pass
        table = cat.create_table_if_not_exists(name, schema=LAKE_SCHEMA)
    except LakeError:
        raise
    except Exception as e:  # a catalog that cannot be reached, a bad URI, a warehouse it cannot write
        raise LakeError(f"table {name} ({catalog}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    have = [f.name for f in table.schema().fields]
    if have != LAKE_SCHEMA.names:
        raise LakeError(f"table {name} has columns {have}, not the documents schema {LAKE_SCHEMA.names}")
    return table


def commit_run(table: Any, run_id: str, batches: Iterator[pa.Table] | list[pa.Table]) -> dict[str, Any]:
    """Replace the table's rows of ``run_id`` with ``batches`` (document rows) in one commit.

    The batches are appended inside one transaction, so memory holds one batch at a time.
    Returns {"snapshot_id", "rows"}.
    """
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.expressions import EqualTo

    batches = list(batches) if not isinstance(batches, list) else batches
    for attempt in range(COMMIT_TRIES):
        rows = 0
        try:
            with table.transaction() as tx, warnings.catch_warnings():
                # a run's first commit has nothing to delete, which pyiceberg warns about
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                tx.delete(EqualTo("run_id", run_id), snapshot_properties={"longwriter.run_id": run_id})
                for b in batches:
                    t = with_run_id(b, run_id)
                    rows += t.num_rows
                    if t.num_rows:
                        tx.append(t, snapshot_properties={"longwriter.run_id": run_id})
            break
        except CommitFailedException:
            if attempt == COMMIT_TRIES - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)
            table = table.refresh()
    snap = table.refresh().current_snapshot()
    return {"snapshot_id": snap.snapshot_id if snap else None, "rows": rows}


def with_run_id(t: pa.Table, run_id: str) -> pa.Table:
    """Document rows (from a run's part files) in the table's schema, ``run_id`` set."""
    if "run_id" in t.column_names:
        t = t.drop_columns(["run_id"])
    t = t.select(DOCUMENT_SCHEMA.names).cast(DOCUMENT_SCHEMA)
    return t.add_column(0, "run_id", pa.array([run_id] * t.num_rows, pa.string())).cast(LAKE_SCHEMA)
