"""Every private Ray API this project touches, in one place. Checked against ray 2.60.0.

Ray has no public form of these yet; ``pyproject.toml`` bounds Ray to 2.60.x so they cannot
move under the code, and ``tests/test_core_no_ray.py`` fails when an ``_internal`` Ray import
appears anywhere else. When upgrading Ray, this is the one file to re-check:

* ray.data: how many batches one async actor runs at once (``map_batches`` has no public knob;
  the env var below is read once, when Ray Data's planner is first imported).
* ray.llm (ray.serve.llm): the OpenAI app factory and its route table, the model card builder,
  and the error type a replica answers with (the public ``ray.serve.llm.openai_api_models``
  classes are subclasses of these, so ``isinstance`` against them would miss the replica's).
"""

from __future__ import annotations

import os
import sys
from typing import Any

_ASYNC_BATCHES_ENV = "RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY"
_PLANNER_MODULE = "ray.data._internal.planner.plan_udf_map_op"


def set_async_batches_per_actor(n: int) -> None:
    """Let each async ``map_batches`` actor run ``n`` input batches at once (Ray's default is 4).

    Takes effect for datasets planned after the call. The env var covers a process that has
    not imported Ray Data's planner yet (and Ray workers started later); the module constant
    covers one that has, e.g. a test process.
    """
    os.environ[_ASYNC_BATCHES_ENV] = str(n)
    planner = sys.modules.get(_PLANNER_MODULE)
    if planner is None:
        import importlib

        planner = importlib.import_module(_PLANNER_MODULE)
    planner.DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY = n


def openai_app() -> Any:
    """ray.serve.llm's FastAPI app for the OpenAI routes (400 on validation errors)."""
    from ray.llm._internal.serve.core.ingress.ingress import init

    return init()


def openai_routes(names: tuple[str, ...]) -> dict[str, Any]:
    """ray.serve.llm's route builders for the named OpenAI endpoints."""
    from ray.llm._internal.serve.core.ingress.ingress import DEFAULT_ENDPOINTS

    return {k: DEFAULT_ENDPOINTS[k] for k in names}


def model_card(model_id: str, llm_config: Any) -> Any:
    """The ``/v1/models`` entry ray.serve.llm builds for one LLMConfig."""
    from ray.llm._internal.serve.core.configs.openai_api_models import to_model_metadata

    return to_model_metadata(model_id, llm_config)


def replica_error_type() -> type:
    """The class of the error object an LLM replica yields instead of a response."""
    from ray.llm._internal.serve.core.configs.openai_api_models import ErrorResponse

    return ErrorResponse
