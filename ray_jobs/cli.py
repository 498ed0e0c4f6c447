"""`longwriter`: one command line over the same code the Ray jobs and the Serve app run.

Sub-commands: write (one document, no Ray), generate (bulk, Ray Data), eval (LongBench-Write),
sft / make-pairs / dpo (training on Ray Train), serve (Ray Serve app).
Every config dataclass field is a flag; ``--config FILE.yaml`` sets several at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from typing import Any, Callable

from core import versions
from core.config import check_config, config_fields, update_config
from core.errors import one_line
from core.redact import redact
from ray_jobs import console


def add_config_flags(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field, with the field's documented default as help."""
    g = p.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    for f in config_fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help text: the field's own words are escaped here, not where they are written.
        help_ = f"{f.metadata.get('help', '')} (default: {f.default})".replace("%", "%%")
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
    return check_config(dataclasses.replace(cfg, **given))


def add_sections(p: argparse.ArgumentParser, sections: dict[str, type]) -> None:
    """``--config`` and the flags of each config of a job; ``sections`` maps YAML section name ->
    config class."""
    p.add_argument("--config", default=None, help=f"YAML with {', '.join(n + ':' for n in sections)} sections")
    for cls in sections.values():
        add_config_flags(p, cls)


def add_job_parser(sub: argparse._SubParsersAction, name: str, help: str, doc: str | None,
                   sections: dict[str, type], func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """The sub-command of a job whose flags are its config sections (generate, eval, make-pairs)."""
    p = sub.add_parser(name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sections(p, sections)
    p.set_defaults(func=func)
    return p


def build_sections(args: argparse.Namespace, sections: dict[str, type]) -> list[Any]:
    """Each section's config, from defaults, the ``--config`` YAML section of that name, then flags."""
    y = load_yaml(getattr(args, "config", None))
    return [build_config(cls, args, y.get(name)) for name, cls in sections.items()]


def load_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections")
    return data


# Sub-command of each `python -m ray_jobs.X` entry point (they all run through this parser).
MODULE_COMMANDS = {"ray_jobs.write": "write", "ray_jobs.generate": "generate", "ray_jobs.evaluate": "eval",
                   "ray_jobs.sft": "sft", "ray_jobs.pairs": "make-pairs", "ray_jobs.dpo": "dpo",
                   "ray_jobs.serve_cmd": "serve"}


def build_parser(allow_abbrev: bool = True) -> argparse.ArgumentParser:
    """The whole `longwriter` parser (``allow_abbrev=False`` for strict config checks)."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="longwriter",
        description="Plan-then-write long-form generation (AgentWrite) on vLLM and Ray.",
        allow_abbrev=allow_abbrev,
    )
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show vLLM, Ray and library output on the terminal (default: in a log file whose "
                             "path the first line names; also LONGWRITER_DEBUG=1)")
    parser.add_argument("--debug", action="store_true", help="--verbose, plus full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULE_COMMANDS:
        importlib.import_module(module).register(sub)
    for sp in sub.choices.values():
        sp.allow_abbrev = allow_abbrev
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console.start(args.command, console.verbose_requested(args.verbose or args.debug))
    mismatch = versions.mismatch_line()
    if mismatch:
        console.say(mismatch)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        console.say("interrupted")
        return 130
    except Exception as e:  # one line for users; --debug for the traceback
        if args.debug:
            traceback.print_exc(file=console.stream())
        msg = redact(one_line(e, 10_000))
        where = f" (details: {console.log_path()})" if console.log_path() else ""
        console.say(f"longwriter {args.command}: error: {msg}{where}")
        return 2
    finally:
        console.end()


if __name__ == "__main__":
    sys.exit(main())
