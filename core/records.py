"""The document record and its Arrow schema: the one place the output format is defined.

Every writer (CLI, Ray Data job, Serve endpoint) builds a :class:`Document`, and every Parquet
file is written with :data:`DOCUMENT_SCHEMA`. ``SCHEMA_VERSION`` goes into the Parquet metadata;
bump it on any incompatible change and note it in the README.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from core.redact import redact

SCHEMA_VERSION = "1"


@dataclass
class CallStat:
    """Accounting for one engine call (the plan, a section, or a continuation)."""

    # "plan" | "section" | "continue" | "direct" | "discarded" (a resampled-away answer) |
    # "note": no call, a decision recorded, its text in finish_reason (a plan retried, a plan
    # that fell back, named sections adopted, a section cut back to its band)
    kind: str
    step: int  # section index (0-based); -1 for the plan
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    latency_s: float
    finish_reason: str


@dataclass
class Section:
    index: int
    point: str
    budget: int  # target words
    text: str = ""
    words: int = 0


@dataclass
class Document:
    id: str
    prompt: str
    target_words: int
    target_source: str  # "row" | "instruction" | "default"
    language: str = "en"
    plan: list[dict[str, Any]] = field(default_factory=list)  # [{"point", "words"}]
    sections: list[Section] = field(default_factory=list)
    text: str = ""
    word_count: int = 0
    model: str = ""
    mode: str = "agentwrite"
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    calls: list[CallStat] = field(default_factory=list)
    latency_s: float = 0.0
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    metadata: dict[str, Any] = field(default_factory=dict)
    retryable: bool = False  # failed on an engine error (worth another attempt); not stored

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def cached_tokens(self) -> int:
        return sum(c.cached_tokens for c in self.calls)

    @property
    def generated_tokens(self) -> int:
        return sum(c.generated_tokens for c in self.calls)

    def messages(self) -> list[dict[str, str]]:
        """The SFT view of the document: instruction in, whole text out."""
        if self.status != "ok":
            return []
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.text}]

    def to_row(self) -> dict[str, Any]:
        """A flat row matching :data:`DOCUMENT_SCHEMA` (metadata as a JSON string)."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "target_words": self.target_words,
            "target_source": self.target_source,
            "language": self.language,
            "plan": [{"point": str(p["point"]), "words": int(p["words"])} for p in self.plan],
            "sections": [dataclasses.asdict(s) for s in self.sections],
            "text": self.text,
            "word_count": self.word_count,
            "messages": self.messages(),
            "model": self.model,
            "mode": self.mode,
            "status": self.status,
            "error": redact(self.error) if self.error else self.error,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "generated_tokens": self.generated_tokens,
            "calls": [dataclasses.asdict(c) for c in self.calls],
            "latency_s": float(self.latency_s),
            "created_at": self.created_at,
            "metadata": json.dumps(self.metadata, ensure_ascii=False, sort_keys=True),
        }

    def to_json(self) -> dict[str, Any]:
        row = self.to_row()
        row["metadata"] = self.metadata
        return row


_S, _I32, _I64, _F64 = pa.string(), pa.int32(), pa.int64(), pa.float64()
_CALL = pa.struct([("kind", _S), ("step", _I32), ("prompt_tokens", _I64), ("cached_tokens", _I64),
                   ("generated_tokens", _I64), ("latency_s", _F64), ("finish_reason", _S)])
_PLAN_POINT = pa.struct([("point", _S), ("words", _I64)])
_SECTION = pa.struct([("index", _I32), ("point", _S), ("budget", _I64), ("text", _S), ("words", _I64)])
_MESSAGE = pa.struct([("role", _S), ("content", _S)])

DOCUMENT_SCHEMA = pa.schema(
    [("id", _S), ("prompt", _S), ("target_words", _I64), ("target_source", _S), ("language", _S),
     ("plan", pa.list_(_PLAN_POINT)), ("sections", pa.list_(_SECTION)), ("text", _S), ("word_count", _I64),
     ("messages", pa.list_(_MESSAGE)), ("model", _S), ("mode", _S), ("status", _S), ("error", _S),
     ("prompt_tokens", _I64), ("cached_tokens", _I64), ("generated_tokens", _I64), ("calls", pa.list_(_CALL)),
     ("latency_s", _F64), ("created_at", _S),
     ("metadata", _S)],  # JSON object of the input row's pass-through fields
    metadata={"longwriter.schema_version": SCHEMA_VERSION},
)


def documents_to_table(docs: list[Document]) -> pa.Table:
    return pa.Table.from_pylist([d.to_row() for d in docs], schema=DOCUMENT_SCHEMA)
