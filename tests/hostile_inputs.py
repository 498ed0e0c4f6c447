"""The hostile input set: odd but real inputs, one class per file, with the expected outcome.

``python tests/hostile_inputs.py`` (re)writes ``tests/data/hostile/`` (small files, committed)
and its ``_expected.json``; :func:`add_large` adds the inputs too big to commit (a 10 MB line,
100,000 nested brackets) to a copy of the folder at test time. Good rows ask for 30 words so a
real engine writes them in seconds. ``_expected.json`` (skipped as input: its name starts with ``_``) lists the id of every record that must
come out ``ok`` and, for every record that must fail, where it is and a word of its reason.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DIR = Path(__file__).parent / "data" / "hostile"
W = 30  # words per good row


TOPICS = ["tea", "rivers", "owls", "salt", "glass", "kites", "moss", "bees", "tides", "maps", "clocks", "bread",
          "snow", "copper", "ferns", "lamps", "wool", "harbors", "violins", "deserts"]


def good(i: str, **extra) -> dict:
    """A row the embedded model writes well: a plain topic (ids like "pq-rich-1" as the topic
    gave "1. 1.1.1.1..." junk)."""
    topic = TOPICS[sum(map(ord, i)) % len(TOPICS)]
    return {"id": i, "prompt": f"Write a short note about {topic}.", "length": W, **extra}


def line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


OK: list[str] = []
FAILED: list[tuple[str, str]] = []  # (where, reason fragment)


def jsonl(name: str, lines: list[tuple[bytes, str | None]], sep: bytes = b"\n", head: bytes = b"") -> None:
    """Write lines; each comes with None (must be ok: its id is read from it) or a reason fragment."""
    (DIR / name).parent.mkdir(parents=True, exist_ok=True)
    (DIR / name).write_bytes(head + sep.join(raw for raw, _ in lines) + sep)
    for n, (raw, reason) in enumerate(lines, start=1):
        if reason is None:
            OK.append(json.loads(raw)["id"])
        elif reason != "":  # "" = a blank line: no record
            FAILED.append((f"{name}:{n}", reason))


def build() -> None:
    if DIR.exists():
        shutil.rmtree(DIR)
    DIR.mkdir(parents=True)
    OK.clear()
    FAILED.clear()
    g = lambda i, **k: (line(good(i, **k)), None)  # noqa: E731
    jsonl("bom.jsonl", [g("bom-first-line"), g("bom-second-line")], head=b"\xef\xbb\xbf")
    jsonl("crlf.jsonl", [g("crlf-one"), g("crlf-two")], sep=b"\r\n")
    jsonl("huge_length.jsonl", [(b'{"id": "huge-length", "prompt": "x", "length": 1' + b"0" * 400 + b"}", "outside"),
                                (b'{"id": "float-huge", "prompt": "x", "length": 1e400}', "not a number")])
    jsonl("over_4300_digits.jsonl", [(b'{"prompt": "x", "length": ' + b"7" * 5000 + b"}", "malformed JSON"),
                                     (b'{"prompt": "x", "n": ' + b"7" * 5000 + b"}", "malformed JSON")])
    jsonl("nul.jsonl", [(b'{"id": "raw-nul", "prompt": "a\x00b"}', "malformed JSON"),
                        (b'{"id": "escaped-nul", "prompt": "a\\u0000b"}', "NUL"),
                        g("nul-in-metadata", note="a\u0000b")])
    jsonl("surrogates.jsonl", [(b'{"id": "lone-surrogate", "prompt": "a\\ud800b"}', "surrogate"),
                               (b'{"prompt": "fine", "meta": "\\udfff"}', "surrogate"),
                               g("paired-surrogate-ok", emoji="\U0001F600")])
    jsonl("invalid_utf8.jsonl", [(b'{"prompt": "caf\xe9"}', "UTF-8"), g("after-invalid-utf8")])
    jsonl("ids.jsonl", [g("7"),  # a string id
                        (b'{"id": 8, "prompt": "Write a short note about eight.", "length": 30}', None),
                        (b'{"id": 7.5, "prompt": "x"}', "field 'id'"),
                        (b'{"id": 7, "prompt": "x"}', "duplicate id '7'"),
                        (b'{"id": true, "prompt": "x"}', "field 'id'"),
                        (b'{"id": "", "prompt": "x"}', "field 'id'"),
                        (b'{"id": "   ", "prompt": "x"}', "field 'id'"),
                        (b'{"id": {"a": 1}, "prompt": "x"}', "field 'id'"),
                        (b'{"id": "a\\nb", "prompt": "x"}', "control character"),
                        (line({"id": "i" * 300, "prompt": "x"}), "over the limit"),
                        (b'{"id": "bad-0123456789abcdef", "prompt": "x"}', "reserved")])
    OK[OK.index(8)] = "8"  # an integer id becomes its decimal string
    jsonl("lengths.jsonl", [(b'{"id": "bool-length", "prompt": "x", "length": true}', "not a number"),
                            (b'{"id": "nan-length", "prompt": "x", "length": NaN}', "not a number"),
                            (b'{"id": "inf-length", "prompt": "x", "length": Infinity}', "not a number"),
                            (b'{"id": "neg-length", "prompt": "x", "length": -5}', "outside"),
                            (b'{"id": "zero-length", "prompt": "x", "length": 0}', "outside"),
                            (b'{"id": "big-length", "prompt": "x", "length": 60000}', "outside"),
                            (b'{"id": "half-length", "prompt": "x", "length": 30.5}', "whole number"),
                            (b'{"id": "word-length", "prompt": "x", "length": "thirty"}', "not a number"),
                            (b'{"id": "list-length", "prompt": "x", "length": [30]}', "not a number"),
                            (line({**good("string-length"), "length": "30"}), None),
                            (line({**good("float-length"), "length": 30.0}), None),
                            (line({**good("nan-in-metadata"), "score": float("nan")}).replace(b"NaN", b"NaN"), None)])
    jsonl("prompts.jsonl", [(b'{"id": "no-prompt"}', "missing"),
                            (b'{"id": "int-prompt", "prompt": 5}', "an integer"),
                            (b'{"id": "empty-prompt", "prompt": ""}', "empty"),
                            (b'{"id": "blank-prompt", "prompt": "  \\t "}', "empty"),
                            (b'{"id": "null-prompt", "prompt": null}', "missing"),
                            (b'{"id": "list-prompt", "prompt": ["a"]}', "an array"),
                            (line({"id": "long-prompt", "prompt": "word " * 5000}), "over the limit")])
    jsonl("duplicate_keys.jsonl", [(b'{"id": "dupkey", "prompt": "a", "prompt": "b"}', "appears twice"),
                                   (b'{"id": "dupkey-nested", "prompt": "a", "m": {"k": 1, "k": 2}}', "appears twice")])
    jsonl("not_objects.jsonl", [(b'[{"id": "in-array", "prompt": "x"}]', "an array"), (b'"just a string"', "a string"),
                                (b"42", "an integer"), (b"null", "a null"), (b"true", "a boolean")])
    jsonl("malformed.jsonl", [(b'{"prompt": "unterminated', "malformed JSON"), (b'{"prompt": "x"} trailing', "malformed JSON"),
                              (b"{'prompt': 'single quotes'}", "malformed JSON"), (b'{"prompt": "x",}', "malformed JSON"),
                              g("after-malformed")])
    jsonl("dup_ids.jsonl", [(b'{"id": "a1", "prompt": "x", "length": -5}', "outside"),
                            g("a1"),
                            (line(good("a1")), "duplicate id 'a1'")])
    (DIR / "empty.jsonl").write_bytes(b"")
    (DIR / "blank_lines.jsonl").write_bytes(b"\n\n   \n\t\r\n\n")
    (DIR / "gzipped.jsonl").write_bytes(gzip.compress(line(good("gzip-one")) + b"\n" + line(good("gzip-two")) + b"\n", mtime=0))
    OK.extend(["gzip-one", "gzip-two"])
    (DIR / "utf16.jsonl").write_bytes(("\ufeff" + json.dumps(good("utf16-bom")) + "\n").encode("utf-16-le"))
    OK.append("utf16-bom")
    (DIR / "truncated.jsonl").write_bytes(line(good("before-truncation")) + b'\n{"id": "cut", "prompt": "Wri')
    OK.append("before-truncation")
    FAILED.append(("truncated.jsonl:2", "malformed JSON"))
    jsonl("metadata.jsonl", [g("rich-metadata", big=10 ** 300, nested={"a": [1, {"b": None}]}, rtl="مرحبا", zh="你好"),
                             (line({**good("deep-metadata"), "m": json.loads("[" * 40 + "]" * 40)}), "nested deeper")])
    (DIR / "array.json").write_text(json.dumps([good("array-element"), {"id": "array-bad", "prompt": ""}], indent=2))
    OK.append("array-element")
    FAILED.append(("array.json#2", "empty"))
    (DIR / "pretty_object.json").write_text(json.dumps(good("pretty-object"), indent=2))
    OK.append("pretty-object")
    # The same bad line in two folders: two rows with two ids (ids hash the relative path).
    for sub in ("north", "south"):
        jsonl(f"{sub}/same.jsonl", [(b'{"prompt": ""}', "empty")])
    (DIR / "notes.txt").write_text("not an input: skipped (only .jsonl, .json, .parquet are read)\n")
    (DIR / "_hidden.jsonl").write_text('{"prompt": "skipped: names starting with _ are not inputs"}\n')

    utc = timezone.utc
    rich = pa.table({
        "id": ["pq-rich-1", "pq-rich-2"],
        "prompt": [good("pq-rich-1")["prompt"], good("pq-rich-2")["prompt"]],
        "length": pa.array([W, W], pa.int32()),
        "ts": pa.array([datetime(2024, 5, 1, 12, 30, tzinfo=utc), datetime(1999, 12, 31, tzinfo=utc)], pa.timestamp("us", tz="UTC")),
        "naive_ts": pa.array([datetime(2024, 5, 1, 12, 30), None], pa.timestamp("ms")),
        "day": pa.array([date(2024, 5, 1), date(2000, 2, 29)], pa.date32()),
        "price": pa.array([Decimal("12.34"), Decimal("-0.01")], pa.decimal128(10, 2)),
        "blob": pa.array([b"\x00\xff", b""], pa.binary()),
        "took": pa.array([timedelta(seconds=90), timedelta(0)], pa.duration("s")),
        "tags": pa.array([["a", "b"], []], pa.list_(pa.string())),
        "point": pa.array([{"x": 1.5, "y": float("nan")}, {"x": None, "y": 2.0}], pa.struct([("x", pa.float64()), ("y", pa.float64())])),
        "attrs": pa.array([[("k", 1)], [("k", 2), ("j", 3)]], pa.map_(pa.string(), pa.int64())),
    })
    pq.write_table(rich, DIR / "rich_types.parquet")
    OK.extend(["pq-rich-1", "pq-rich-2"])
    pq.write_table(pa.table({"id": ["np-1", "np-2"], "text": ["no prompt column", "here"]}), DIR / "no_prompt_column.parquet")
    FAILED.extend([("no_prompt_column.parquet#1", "missing"), ("no_prompt_column.parquet#2", "missing")])
    pq.write_table(pa.table({"id": ["ip-1"], "prompt": pa.array([5], pa.int64())}), DIR / "int_prompt.parquet")
    FAILED.append(("int_prompt.parquet#1", "an integer"))
    pq.write_table(pa.table({"id": ["pq-null", "pq-ok"], "prompt": [None, good("pq-ok")["prompt"]],
                             "length": pa.array([W, W], pa.int64())}), DIR / "null_prompt.parquet")
    FAILED.append(("null_prompt.parquet#1", "missing"))
    OK.append("pq-ok")
    (DIR / "not_parquet.parquet").write_text("this is text, not Parquet\n")
    FAILED.append(("not_parquet.parquet", "not a readable Parquet"))
    (DIR / "truncated.parquet").write_bytes((DIR / "rich_types.parquet").read_bytes()[:300])
    FAILED.append(("truncated.parquet", "not a readable Parquet"))

    (DIR / "_expected.json").write_text(json.dumps(
        {"ok": sorted(OK), "failed": [{"where": w, "reason": r} for w, r in sorted(FAILED)],
         "large": [{"where": w, "reason": r} for w, r in LARGE_FAILED], "large_ok": LARGE_OK}, indent=1) + "\n")


LARGE_FAILED = [("large/ten_mb_line.jsonl:1", "over the limit"), ("large/deep_nesting.jsonl:1", "nested too deeply")]
LARGE_OK = ["after-ten-mb-line"]


def add_large(folder: Path) -> None:
    """The inputs too big to commit, written into ``folder/large/``."""
    (folder / "large").mkdir(exist_ok=True)
    ten_mb = line({"id": "ten-mb", "prompt": "x" * (10 << 20)})
    (folder / "large" / "ten_mb_line.jsonl").write_bytes(ten_mb + b"\n" + line(good("after-ten-mb-line")) + b"\n")
    (folder / "large" / "deep_nesting.jsonl").write_bytes(b"[" * 100_000 + b"\n")


if __name__ == "__main__":
    build()
    print(f"{DIR}: {len(OK)} ok, {len(FAILED)} failed records in "
          f"{sum(1 for p in DIR.rglob('*') if p.is_file()) - 1} files", file=sys.stderr)
