"""Request model of ``POST /v1/longwrite`` and its server-sent events.

The OpenAI routes use vLLM's own protocol models (through ``ray.serve.llm``); only the
long-form endpoint is ours. Validation happens here, so a bad body is a 400 that names the
field before any engine work starts.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LongWriteRequest(BaseModel):
    """One long document: an instruction, an optional length, optional sampling overrides."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(min_length=1, max_length=20000, description="the writing request")
    length: int | None = Field(default=None, ge=1, le=50000,
                               description="target words; default: parsed from the instruction, else 1500")
    mode: Literal["agentwrite", "direct"] = Field(default="agentwrite",
                                                  description="agentwrite: plan, then sections; direct: one call")
    model: str | None = Field(default=None, description="must name the served model when given")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="section sampling temperature")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="nucleus sampling")
    seed: int | None = Field(default=None, ge=0, description="base seed (honoured on GPU replicas)")
    stream: bool = Field(default=False, description="server-sent events: plan, each section, then the record")

    @field_validator("instruction")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("instruction is blank")
        return v


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event (``event:`` line, one ``data:`` line of JSON)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def usage(doc: Any) -> dict[str, int]:
    return {"prompt_tokens": doc.prompt_tokens, "cached_tokens": doc.cached_tokens,
            "completion_tokens": doc.generated_tokens, "total_tokens": doc.prompt_tokens + doc.generated_tokens}
