"""`longwriter`: one command line over the same code the Ray jobs and the Serve app run.

Sub-commands: write (one document, no Ray), generate (bulk, Ray Data), eval (LongBench-Write),
sft / make-pairs / dpo (training on Ray Train), serve (Ray Serve app).
Every config dataclass field is a flag; ``--config FILE.yaml`` sets several at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from typing import Any, Callable

from core.config import AgentWriteConfig, EngineConfig, config_fields, update_config


def add_config_flags(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field, with the field's documented default as help."""
    g = p.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    for f in config_fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{f.metadata.get('help', '')} (default: {f.default})"
        if f.type in ("bool", bool):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            conv = _converter(str(f.type))
            g.add_argument(flag, dest=f.name, type=conv, default=None, help=help_, metavar=f.name.upper())


def _converter(t: str) -> Callable[[str], Any]:
    if t.startswith("int"):
        return int
    if t.startswith("float"):
        return float
    return str


def build_config(cls: type, args: argparse.Namespace, yaml_values: dict[str, Any] | None = None) -> Any:
    """Defaults, then the YAML section for this config, then flags given on the command line."""
    cfg = cls()
    if yaml_values:
        cfg = update_config(cfg, yaml_values)
    given = {f.name: getattr(args, f.name) for f in config_fields(cls)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(cfg, **given)


def load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections")
    return data


def quiet_logs(debug: bool) -> None:
    """vLLM and Ray log a lot at start-up; users of the CLI want the progress bar instead."""
    if not debug:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("TQDM_MININTERVAL", "0.5")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="longwriter",
        description="Plan-then-write long-form generation (AgentWrite) on vLLM and Ray.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and engine logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from ray_jobs import write as write_cmd

    write_cmd.register(sub)
    try:
        from ray_jobs import generate as generate_cmd

        generate_cmd.register(sub)
    except ImportError:  # pragma: no cover - optional until the job lands
        pass
    try:
        from ray_jobs import evaluate as evaluate_cmd

        evaluate_cmd.register(sub)
    except ImportError:  # pragma: no cover - optional until the job lands
        pass
    for name in ("sft", "pairs", "dpo", "serve_cmd"):  # training: sft, make-pairs, dpo; serving
        try:
            __import__(f"ray_jobs.{name}", fromlist=["register"]).register(sub)
        except ImportError:  # pragma: no cover - optional until the job lands
            pass
    args = parser.parse_args(argv)
    quiet_logs(args.debug)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for users; --debug for the traceback
        if args.debug:
            traceback.print_exc()
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"longwriter {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
