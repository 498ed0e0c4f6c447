"""Deployment configs stay valid and in step with the code: cluster.yaml (Ray cluster launcher,
AWS) and the KubeRay manifests in k8s/. Fast: no cloud calls, no Ray cluster, no vLLM.

* cluster.yaml goes through Ray's own launcher checks (``prepare_config`` fills in the AWS
  defaults exactly as ``ray up`` does, then ``validate_config`` checks ray-schema.json and the
  node-type rules); only the provider's cloud bootstrap (IAM, subnets, AMI lookups) is skipped.
* The manifests parse, carry the KubeRay fields the operator needs, and their Serve config and
  runtime env pass Ray's own schemas.
* Every ``python -m MODULE`` names a module of this repo (or a whitelisted tool such as venv),
  every flag given to a job module is accepted by that module's real argument parser, and every
  ``module:attr`` import path names a top-level definition (checked by parsing the source, so
  nothing heavy is imported).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import posixpath
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYJOB_YAML = ROOT / "k8s" / "rayjob-generate.yaml"
RAYSERVICE_YAML = ROOT / "k8s" / "rayservice.yaml"
MANIFESTS = [RAYJOB_YAML, RAYSERVICE_YAML]

# Import paths the manifests may reference before their module is written. serve/app.py (the
# Serve application, `serve.app:app_builder`) is being written separately; until that file
# exists the entry is skipped, and as soon as it exists it is checked like every other path
# (so a wrong attribute name then fails). Nothing else may be listed here.

# `python -m` targets that are not part of this repo but may appear in setup commands.
EXTERNAL_MODULES = {"venv", "pip", "pytest"}

GPU_WORKER_TYPES = {"gpu_8b": 1, "gpu_70b_tp8": 8}  # node type -> GPUs per node

# Ray's Serve schemas emit pydantic deprecation warnings on import; they are not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ------------------------------------------------------------------------------ helpers


def load_cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one_of_kind(path: Path, kind: str) -> dict[str, Any]:
    found = [d for d in load_docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path.name}: expected exactly one {kind}, found {len(found)}"
    return found[0]


def cluster_commands(cfg: dict[str, Any]) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    cmds = [c for k in keys for c in (cfg.get(k) or [])]
    for nt in cfg["available_node_types"].values():
        for k in ("initialization_commands", "worker_setup_commands"):
            cmds += nt.get(k) or []
    return cmds


def readme_commands() -> list[tuple[str, str]]:
    """(where, command) for each line of the README's bash blocks (continuations joined)."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                out.append(("README.md", line))
    return out


def all_commands() -> list[tuple[str, str]]:
    """(where, shell command) for every command the configs and the README run."""
    out = [("cluster.yaml", c) for c in cluster_commands(load_cluster())]
    out.append(("k8s/rayjob-generate.yaml entrypoint", one_of_kind(RAYJOB_YAML, "RayJob")["spec"]["entrypoint"]))
    return out + readme_commands()


def simple_commands(cmd: str) -> Iterator[list[str]]:
    """The simple commands of a shell line: split at ; && || | ( ) with quoting respected."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    current: list[str] = []
    for tok in lex:
        if tok and all(ch in "();<>|&" for ch in tok):
            if current:
                yield current
            current = []
        else:
            current.append(tok)
    if current:
        yield current


def strip_env_assignments(words: list[str]) -> list[str]:
    i = 0
    while i < len(words) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[i]):
        i += 1
    return words[i:]


def python_m_calls(cmd: str) -> list[tuple[str, list[str]]]:
    """(module, args) for each ``python[3] -m MODULE args`` in a shell command."""
    calls = []
    for words in simple_commands(cmd):
        words = strip_env_assignments(words)
        for i, w in enumerate(words[:-2]):
            if re.fullmatch(r"python(3(\.\d+)?)?", posixpath.basename(w)) and words[i + 1] == "-m":
                calls.append((words[i + 2], words[i + 3:]))
                break
    return calls


def console_script_calls(cmd: str, scripts: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(script, args) for each call of one of this package's console scripts."""
    calls = []
    for words in simple_commands(cmd):
        words = strip_env_assignments(words)
        if words and posixpath.basename(words[0]) in scripts:
            calls.append((posixpath.basename(words[0]), words[1:]))
    return calls


def project_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})


def module_file(module: str) -> Path | None:
    """The repo file that ``python -m module`` / ``import module`` would load, if any."""
    base = ROOT.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def import_path_problem(path: str) -> str | None:
    """None when ``module:attr`` names a top-level definition of a repo module."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        return f"{path!r} is not of the form module:attribute"
    f = module_file(module)
    if f is None:
        return f"{path!r}: module {module} not found under {ROOT}"
    first = attr.split(".")[0]
    if first not in top_level_names(f):
        return f"{path!r}: {f.relative_to(ROOT)} defines no top-level {first!r}"
    return None


class JobParser:
    """The real `longwriter` parser behind one entry point, abbreviations off (typos fail)."""

    def __init__(self, module: str | None = None):
        from ray_jobs.cli import MODULE_COMMANDS, build_parser

        assert module is None or module in MODULE_COMMANDS, f"{module} is not an entry point of ray_jobs.cli"
        self.prefix = [MODULE_COMMANDS[module]] if module else []
        self.prog = f"python -m {module}" if module else "longwriter"
        self.parser = build_parser(allow_abbrev=False)

    def parse_args(self, args: list[str]) -> argparse.Namespace:
        return self.parser.parse_args([*self.prefix, *args])


def job_parser(module: str) -> JobParser:
    return JobParser(module)


def parse_or_fail(parser: argparse.ArgumentParser, args: list[str], where: str) -> argparse.Namespace:
    try:
        return parser.parse_args(args)
    except SystemExit as e:  # argparse reports errors by exiting (message on stderr)
        pytest.fail(f"{where}: {parser.prog} rejects {shlex.join(args)!r} (exit {e.code}); see stderr")


def pod_containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def gpu_limit(group: dict[str, Any]) -> int:
    return sum(int((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0))
               for c in pod_containers(group))


def cluster_groups(spec: dict[str, Any]) -> list[dict[str, Any]]:
    rcs = spec["rayClusterSpec"]
    return [rcs["headGroupSpec"], *rcs["workerGroupSpecs"]]


def fields_of(model: type) -> set[str]:
    """Field names of a (pydantic v1 or v2) model class."""
    return set(getattr(model, "model_fields", None) or model.__fields__)


def validate_model(model: type, data: Any) -> Any:
    fn = getattr(model, "model_validate", None) or model.parse_obj
    return fn(data)


def ray_version_in_cluster_yaml() -> str:
    joined = "\n".join(load_cluster()["setup_commands"])
    m = re.search(r"RAY_VERSION=(\S+?)\s", joined)
    assert m, "cluster.yaml setup_commands set no RAY_VERSION"
    return m.group(1)


# ------------------------------------------------------------------------------ cluster.yaml


def test_cluster_yaml_passes_ray_launcher_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load_cluster()
    cfg = prepare_config(copy.deepcopy(raw))  # what `ray up` does before any cloud call
    validate_config(cfg)  # ray-schema.json + node type / worker count rules
    assert cfg["provider"]["type"] == "aws"
    assert cfg["cluster_name"] == "longwriter"
    # Our own values survive the merge with Ray's AWS defaults (which are shallow-merged).
    assert cfg["setup_commands"] == raw["setup_commands"]
    assert cfg["head_start_ray_commands"] == raw["head_start_ray_commands"]


def test_cluster_yaml_core_settings():
    cfg = load_cluster()
    prov = cfg["provider"]
    assert prov["region"] and prov["availability_zone"]
    assert all(z.strip().startswith(prov["region"]) for z in prov["availability_zone"].split(","))
    assert cfg["max_workers"] >= 1 and cfg["idle_timeout_minutes"] > 0
    assert not cfg.get("docker"), "docker is meant to be off (see the commented block)"


def test_cluster_yaml_node_types():
    cfg = load_cluster()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU") == 0, "head advertises no CPUs so nothing is scheduled on it"
    assert head["node_config"]["InstanceType"]
    total_max = 0
    for name, gpus in GPU_WORKER_TYPES.items():
        assert name in types, f"missing node type {name}"
        nt = types[name]
        assert nt["resources"]["GPU"] == gpus, f"{name}: GPU resource"
        assert nt["resources"]["CPU"] >= 1, f"{name}: engine actors reserve CPUs too"
        assert nt.get("min_workers", 0) == 0, f"{name}: GPU nodes should scale from zero"
        assert nt["max_workers"] >= 1
        total_max += nt["max_workers"]
        nc = nt["node_config"]
        assert nc["InstanceType"] and nc["ImageId"]
        prof = nc.get("IamInstanceProfile")
        assert prof and (prof.get("Arn") or prof.get("Name")), f"{name}: IamInstanceProfile for S3"
        if prof.get("Arn"):
            assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/\S+", prof["Arn"]), prof["Arn"]
        m = re.search(r"tp(\d+)$", name)
        if m:  # the type named for tensor parallel size N offers N GPUs per node
            assert int(m.group(1)) == gpus
    assert types["gpu_8b"]["max_workers"] == 8 and types["gpu_70b_tp8"]["max_workers"] == 2
    assert total_max <= cfg["max_workers"], "global max_workers would cap the GPU types"


def test_cluster_yaml_installs_repo_with_gpu_set():
    cfg = load_cluster()
    mounts = cfg["file_mounts"]
    remote = [r for r, local in mounts.items() if local in (".", "./")]
    assert remote, "file_mounts should upload the repository (run `ray up` from its root)"
    assert ".venv" in cfg.get("rsync_exclude", []), "the local venv must not be uploaded"
    setup = "\n".join(cfg["setup_commands"])
    assert "venv" in setup
    assert any(f"cd {r}" in setup for r in remote), "setup should install from the mounted repo"
    install = [c for c in cfg["setup_commands"] if "pip install" in c and ".[gpu]" in c]
    assert install, "setup_commands should `pip install -e .[gpu]`"
    assert any("-c constraints.txt" in c and '-e ".[gpu]"' in c for c in install)
    assert any("==${RAY_VERSION}" in c for c in install), "install the Ray version the launcher runs"
    assert re.search(r"^torch==", (ROOT / "constraints.txt").read_text(), re.M)
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in c for c in cfg["worker_start_ray_commands"])
    assert all("venv/bin/ray" in c for c in starts if "ray " in c), "use the venv's ray"


# ------------------------------------------------------------------------------ KubeRay manifests


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_documents_have_identity(path):
    docs = load_docs(path)
    assert docs
    for d in docs:
        assert d.get("apiVersion") and d.get("kind"), f"{path.name}: document without apiVersion/kind"
        assert (d.get("metadata") or {}).get("name"), f"{path.name}: {d['kind']} without metadata.name"


@pytest.mark.parametrize("path,kind", [(RAYJOB_YAML, "RayJob"), (RAYSERVICE_YAML, "RayService")],
                         ids=["RayJob", "RayService"])
def test_ray_cluster_spec(path, kind):
    obj = one_of_kind(path, kind)
    assert obj["apiVersion"] == "ray.io/v1"
    rcs = obj["spec"]["rayClusterSpec"]
    assert rcs["rayVersion"] == ray_version_in_cluster_yaml(), "one Ray version everywhere"
    head = rcs["headGroupSpec"]
    assert pod_containers(head) and gpu_limit(head) == 0
    workers = rcs["workerGroupSpecs"]
    assert workers, "at least one worker group"
    assert any(gpu_limit(g) >= 1 for g in workers), "a GPU worker group (nvidia.com/gpu)"
    for g in workers:
        assert g["groupName"]
        assert g.get("minReplicas", 0) <= g["replicas"] <= g["maxReplicas"]
        for c in pod_containers(g):
            res = c.get("resources") or {}
            if "nvidia.com/gpu" in res.get("limits", {}):
                assert res.get("requests", {}).get("nvidia.com/gpu", res["limits"]["nvidia.com/gpu"]) == \
                    res["limits"]["nvidia.com/gpu"], "GPU requests must equal limits"
    for group in cluster_groups(obj["spec"]):
        # The CRD types rayStartParams as map[string]string: numbers must be quoted.
        bad = {k: v for k, v in (group.get("rayStartParams") or {}).items() if not isinstance(v, str)}
        assert not bad, f"{kind}: rayStartParams values must be strings: {bad}"
    images = {c["image"] for g in cluster_groups(obj["spec"]) for c in pod_containers(g)}
    assert len(images) == 1, f"{kind}: head and workers should run the same image, got {images}"


def test_rayjob_fields():
    docs = load_docs(RAYJOB_YAML)
    job = one_of_kind(RAYJOB_YAML, "RayJob")
    spec = job["spec"]
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    # Pods reach S3 through a ServiceAccount (IRSA) defined alongside.
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for group in cluster_groups(spec):
        sa = group["template"]["spec"].get("serviceAccountName")
        assert sa in accounts, f"pods should use the S3 ServiceAccount, got {sa!r}"
        assert "eks.amazonaws.com/role-arn" in (accounts[sa]["metadata"].get("annotations") or {})


def test_rayjob_runtime_env():
    from ray.runtime_env import RuntimeEnv

    spec = one_of_kind(RAYJOB_YAML, "RayJob")["spec"]
    renv = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
    assert isinstance(renv, dict)
    RuntimeEnv(**renv)  # Ray's own validation of the fields
    # ray_jobs.generate passes some of the driver's environment variables to ray.init itself;
    # Ray refuses to merge a job runtime env that sets the same keys ("Failed to merge").
    forwarded = forwarded_env_vars(ROOT / "ray_jobs" / "generate.py")
    clash = sorted(set(renv.get("env_vars") or {}) & forwarded)
    assert not clash, f"runtimeEnvYAML env_vars {clash} clash with ray_jobs.generate's own runtime env"


def forwarded_env_vars(path: Path) -> set[str]:
    """The tuple of environment variable names generate.py forwards to its workers."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                                               for e in node.elts):
            names = {e.value for e in node.elts}
            if "VLLM_LOGGING_LEVEL" in names:
                return names
    return set()  # nothing forwarded any more: no clash possible


def test_rayjob_entrypoint_fits_the_gpu_workers():
    spec = one_of_kind(RAYJOB_YAML, "RayJob")["spec"]
    calls = python_m_calls(spec["entrypoint"])
    assert [m for m, _ in calls] == ["ray_jobs.generate"]
    args = parse_or_fail(job_parser("ray_jobs.generate"), calls[0][1], "RayJob entrypoint")
    assert args.input and args.input.startswith("s3://") and args.output and args.output.startswith("s3://")
    tp = args.tensor_parallel_size or 1
    engines = args.engines or 1
    groups = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert tp <= max(gpu_limit(g) for g in groups), "a tensor-parallel engine must fit in one pod"
    slots = sum(g["replicas"] * (gpu_limit(g) // tp) for g in groups)
    assert engines <= slots, f"--engines {engines} needs {engines * tp} GPUs in pods of >= {tp}; has {slots} slots"


def check_serve_config(cfg: dict) -> tuple[dict, tuple]:
    """Serve's own schema, then our app's args through the app's own parser."""
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    from serve.app import configs_from_args

    validate_model(ServeDeploySchema, cfg)
    app = next(a for a in cfg["applications"] if a["name"] == "longwriter")
    assert app["import_path"] == "serve.app:app_builder" and app["route_prefix"] == "/"
    # The schemas ignore unknown keys, so check spelling against their field names.
    assert set(app) <= fields_of(ServeApplicationSchema), set(app) - fields_of(ServeApplicationSchema)
    return app, configs_from_args(app["args"])  # unknown sections or fields raise


def test_rayservice_serve_config():
    from ray.serve.config import AutoscalingConfig

    svc = one_of_kind(RAYSERVICE_YAML, "RayService")
    raw = svc["spec"]["serveConfigV2"]
    assert isinstance(raw, str), "serveConfigV2 is a YAML string (a `|` block)"
    app, (scfg, ecfg, _) = check_serve_config(yaml.safe_load(raw))
    assert ecfg.model and scfg.device == "gpu" and not scfg.api_key
    assert (scfg.min_replicas, scfg.max_replicas, scfg.target_ongoing_requests) == (1, 4, 8)
    assert scfg.max_ongoing_requests >= scfg.target_ongoing_requests
    AutoscalingConfig(min_replicas=scfg.min_replicas, max_replicas=scfg.max_replicas,
                      target_ongoing_requests=scfg.target_ongoing_requests,
                      upscale_delay_s=scfg.upscale_delay_s, downscale_delay_s=scfg.downscale_delay_s)
    groups = svc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus_per_pod = max(gpu_limit(g) for g in groups)
    max_pods = sum(g["maxReplicas"] for g in groups)
    assert ecfg.tensor_parallel_size <= gpus_per_pod
    assert scfg.max_replicas * ecfg.tensor_parallel_size <= max_pods * gpus_per_pod, \
        "worker group maxReplicas cannot host max_replicas"
    assert svc["spec"]["rayClusterSpec"].get("enableInTreeAutoscaling") is True, \
        "Serve autoscaling needs the Ray autoscaler to add GPU pods"


def test_repo_serve_config_is_valid_and_cpu_friendly():
    app, (scfg, ecfg, _) = check_serve_config(yaml.safe_load((ROOT / "serve" / "config.yaml").read_text()))
    assert ecfg.model is None and scfg.device == "auto"  # the embedded model, here and on GPUs
    assert 1 <= scfg.min_replicas <= scfg.max_replicas and scfg.target_ongoing_requests < scfg.max_ongoing_requests


# ------------------------------------------------------------------------------ code references


def test_python_m_modules_exist():
    seen = []
    for where, cmd in all_commands():
        for module, _ in python_m_calls(cmd):
            seen.append(module)
            if module in EXTERNAL_MODULES:
                continue
            f = module_file(module)
            assert f is not None, f"{where}: `python -m {module}`: no {module.replace('.', '/')}.py in the repo"
            if f.name == "__init__.py":
                assert (f.parent / "__main__.py").is_file(), f"{where}: package {module} has no __main__.py"
    assert "ray_jobs.generate" in seen, "the bulk job should be referenced"


def test_flags_are_accepted_by_the_job_parsers():
    scripts = project_scripts()
    checked = 0
    for where, cmd in all_commands():
        for module, args in python_m_calls(cmd):
            if module in EXTERNAL_MODULES:
                continue
            parse_or_fail(job_parser(module), args, where)
            checked += 1
        for script, args in console_script_calls(cmd, scripts):
            assert import_path_problem(scripts[script]) is None, import_path_problem(scripts[script])
            assert args, f"{where}: `{script}` without a sub-command"
            parse_or_fail(JobParser(), args, where)
            checked += 1
    assert checked >= 1


def test_parser_check_catches_bad_flags():
    p = job_parser("ray_jobs.generate")
    with pytest.raises(SystemExit):
        p.parse_args(["--input", "a", "--no-such-flag", "1"])
    with pytest.raises(SystemExit):
        p.parse_args(["--in", "a"])  # abbreviations are off: typos do not slip through


def referenced_import_paths() -> list[tuple[str, str]]:
    out = []
    svc = one_of_kind(RAYSERVICE_YAML, "RayService")
    for app in yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]:
        out.append(("k8s/rayservice.yaml", app["import_path"]))
    for app in yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["applications"]:
        out.append(("serve/config.yaml", app["import_path"]))
    out += [("pyproject.toml [project.scripts]", target) for target in project_scripts().values()]
    return out


def test_import_paths_exist():
    for where, path in referenced_import_paths():
        problem = import_path_problem(path)
        assert problem is None, f"{where}: {problem}"


def test_import_path_checker_finds_missing_things():
    assert import_path_problem("ray_jobs.generate:add_flags") is None
    assert import_path_problem("ray_jobs.cli:main") is None
    assert "defines no top-level" in import_path_problem("ray_jobs.generate:no_such_thing")
    assert "not found" in import_path_problem("ray_jobs.no_such_module:main")
    assert "not of the form" in import_path_problem("ray_jobs.generate")


def test_command_splitting():
    cmd = ("cd ~/x && RAY_VERSION=1 ~/venv/bin/python -m ray_jobs.generate --input 'a b' --engines 2; "
           "python3 -c 'import sys; print(1)' || (python3 -m venv ~/venv)")
    assert python_m_calls(cmd) == [("ray_jobs.generate", ["--input", "a b", "--engines", "2"]),
                                   ("venv", ["~/venv"])]
