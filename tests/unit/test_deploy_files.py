"""The files in deploy/ stay true to the code, checked without Docker: the settings they name are
ones Fairwatch reads, the commands they run parse, the image installs hashed dependencies and
runs unprivileged, and the health checks ask for a route the app serves."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; pinned in requirements.lock

import server.settings
from server.app import create_app
from server.cli import _parser  # the CLI's argparse parser, exactly as `fairwatch` builds it
from server.settings import Environment, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "fairwatch.env.example"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
_LOCAL = {"fairwatch.env", "secrets"}  # deploy/README.md creates them; never committed

_VARIABLE = re.compile(r"\bFAIRWATCH_[A-Z0-9_]*[A-Z0-9]\b")
# `fairwatch ARGS` in prose or code, `.../bin/fairwatch ARGS` and `docker compose exec SERVICE
# fairwatch ARGS`; `fairwatch.env` or `fairwatch-api.service` are names, not commands.
_ARG = r"[\w./:=@,-]+"
_INVOCATION = re.compile(
    rf"(?:/bin/|(?<=`)|\bexec\s+[\w-]+\s+)fairwatch(?![\w.-])((?:[ \t]+{_ARG})+)"
)
_URL_PATH = re.compile(r"https?://[^/\s'\"]+(/[^\s'\"?]*)")


def _deploy_texts() -> dict[str, str]:
    """The files of deploy/, without an operator's local configuration and secrets (which may
    be readable only by the container user)."""
    return {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for path in sorted(DEPLOY.rglob("*"))
        if path.is_file() and path.relative_to(DEPLOY).parts[0] not in _LOCAL
    }


def _settings_variables() -> set[str]:
    """Every FAIRWATCH_* name that server/settings.py reads (its string constants)."""
    tree = ast.parse(Path(server.settings.__file__).read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _VARIABLE.fullmatch(node.value)
    }


def _cli_error(argv: list[str]) -> str | None:
    """Why `fairwatch ARGV` would be refused by the argument parser, or None if it parses."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip() or "refused"
    return None


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _fairwatch_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the image built from deploy/Dockerfile."""
    return {
        name: service
        for name, service in _compose()["services"].items()
        if isinstance(service.get("build"), dict)
        and service["build"].get("dockerfile") == "deploy/Dockerfile"
    }


def _run_commands() -> list[tuple[str, list[str]]]:
    """What the deployment actually runs: the image's CMD, each compose service's command and
    each unit's ExecStart, as arguments to `fairwatch`."""
    instructions = _dockerfile_instructions()
    commands = [("Dockerfile CMD", json.loads(args)) for kw, args in instructions if kw == "CMD"]
    for name, service in _fairwatch_services().items():
        commands.append((f"compose service {name}", list(service["command"])))
    for unit in UNITS:
        for line in unit.read_text(encoding="utf-8").splitlines():
            if line.startswith("ExecStart="):
                words = shlex.split(line.removeprefix("ExecStart="))
                assert words[0].endswith("/bin/fairwatch"), f"{unit.name}: {line}"
                commands.append((unit.name, words[1:]))
    return commands


def _health_urls() -> list[tuple[str, str, list[str]]]:
    """(where, health-check URL, the command it checks) for the image and compose services."""
    instructions = _dockerfile_instructions()
    cmd = next(json.loads(args) for kw, args in instructions if kw == "CMD")
    urls = [
        ("Dockerfile HEALTHCHECK", url.group(0), cmd)
        for kw, args in instructions
        if kw == "HEALTHCHECK"
        for url in _URL_PATH.finditer(args)
    ]
    for name, service in _fairwatch_services().items():
        check = service.get("healthcheck", {})
        if check.get("disable"):
            continue
        for url in _URL_PATH.finditer(" ".join(check.get("test", []))):
            urls.append((f"compose service {name}", url.group(0), list(service["command"])))
    return urls


def _env_example() -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        # Plain KEY=VALUE: no quotes, spaces or $ that docker compose, systemd and sh would
        # each read differently.
        match = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=([^\s\"'$`\\]*)", line)
        assert match, f"{ENV_EXAMPLE.name}:{number} is not KEY=VALUE: {line!r}"
        assert match[1] not in env, f"{ENV_EXAMPLE.name}:{number} repeats {match[1]}"
        env[match[1]] = match[2]
    return env


def test_every_fairwatch_variable_in_deploy_is_read_by_settings() -> None:
    known = _settings_variables()
    assert {"FAIRWATCH_DATABASE_URL", "FAIRWATCH_MASTER_KEY_FILE"} <= known  # the parse works
    named = {
        (name, variable)
        for name, text in _deploy_texts().items()
        for variable in _VARIABLE.findall(text)
    }
    assert {variable for _, variable in named} >= {"FAIRWATCH_ENV", "FAIRWATCH_SECRET_KEY"}
    unknown = sorted((name, variable) for name, variable in named if variable not in known)
    assert unknown == []


def test_the_cli_check_refuses_unknown_commands_and_roles() -> None:
    assert _cli_error(["serve", "--role", "api", "--no-migrate"]) is None
    assert "invalid choice" in (_cli_error(["serve", "--role", "web"]) or "")
    assert "invalid choice" in (_cli_error(["migrations"]) or "")
    assert "unrecognized arguments" in (_cli_error(["serve", "--skip-migrations"]) or "")


def test_every_fairwatch_command_in_deploy_parses() -> None:
    found = [
        (name, shlex.split(match[1]))
        for name, text in _deploy_texts().items()
        for match in _INVOCATION.finditer(text)
    ]
    found += _run_commands()
    sources = {name for name, _ in found}
    assert {"deploy/README.md", "Dockerfile CMD", "compose service migrate"} <= sources
    assert {unit.name for unit in UNITS} <= sources
    refused = [(name, argv, error) for name, argv in found if (error := _cli_error(argv))]
    assert refused == []


def test_roles_leave_migrations_to_their_own_step() -> None:
    commands = _run_commands()
    roles = {argv[argv.index("--role") + 1] for _, argv in commands if "--role" in argv}
    assert roles == {"api", "worker", "scheduler"}
    assert ["migrate"] in [argv for _, argv in commands]
    migrating = [(name, argv) for name, argv in commands if argv[:1] == ["serve"]]
    assert migrating, "no serve command found"
    assert [(name, argv) for name, argv in migrating if "--no-migrate" not in argv] == []


def test_compose_runs_roles_only_after_the_migration() -> None:
    services = _fairwatch_services()
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in _compose()["services"]["postgres"]
    for name, service in services.items():
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name


def test_the_image_installs_the_lock_by_hash_and_the_package_without_deps() -> None:
    runs = [args for kw, args in _dockerfile_instructions() if kw == "RUN"]
    installs = [
        command.strip()
        for run in runs
        for command in run.split("&&")
        if re.search(r"\bpip install\b", command)
    ]
    lock = [c for c in installs if "requirements-runtime.lock" in c]
    assert lock, "requirements-runtime.lock is not installed"
    assert all("--require-hashes" in c for c in lock), lock
    package = [c for c in installs if "requirements" not in c]
    assert package, "the fairwatch package is not installed"
    for command in package:
        assert "--no-deps" in command, command
        assert not re.search(r"(^|\s)(-e|--editable)\b", command), command


def test_the_image_runs_as_a_user_other_than_root() -> None:
    instructions = _dockerfile_instructions()
    last_stage = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    users = [args for kw, args in instructions[last_stage:] if kw == "USER"]
    assert users, "the runtime stage has no USER line"
    assert users[-1].split(":")[0] not in ("root", "0")
    entrypoint = [json.loads(args) for kw, args in instructions if kw == "ENTRYPOINT"]
    assert entrypoint == [["fairwatch"]]


def test_the_image_bakes_in_no_secret() -> None:
    settings = [args for kw, args in _dockerfile_instructions() if kw in ("ENV", "ARG")]
    assert settings
    secret = re.compile(r"SECRET|PASSWORD|MASTER_KEY|ACCESS_KEY|DATABASE_URL")
    assert [args for args in settings if secret.search(args)] == []


def test_health_checks_ask_for_a_route_the_app_serves() -> None:
    app = create_app(load_settings({}))
    get_paths = {route.path for route in app.routes if "GET" in getattr(route, "methods", ())}
    checks = _health_urls()
    assert {where for where, _, _ in checks} >= {"Dockerfile HEALTHCHECK", "compose service api"}
    for where, url, command in checks:
        path = _URL_PATH.fullmatch(url)
        assert path is not None
        assert path[1] in get_paths, f"{where}: {url}"
        # The check must reach the port the command listens on.
        port = command[command.index("--port") + 1] if "--port" in command else "8000"
        assert f":{port}/" in url, f"{where}: {url} but the command listens on {port}"


def test_routes_named_in_the_deploy_readme_exist() -> None:
    app = create_app(load_settings({}))
    get_paths = {route.path for route in app.routes if "GET" in getattr(route, "methods", ())}
    named = re.findall(r"`GET (/[^`\s]*)`", (DEPLOY / "README.md").read_text(encoding="utf-8"))
    assert "/readyz" in named
    assert [path for path in named if path not in get_paths] == []


def test_compose_passes_postgres_the_settings_of_postgresql_conf() -> None:
    conf = {}
    for line in (DEPLOY / "postgresql.conf").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("=")
            conf[name.strip()] = value.strip()
    assert int(conf["max_locks_per_transaction"]) >= 1024
    command = _compose()["services"]["postgres"]["command"]
    options = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "-c")
    assert options == conf


def test_the_env_example_is_a_production_configuration_once_its_secret_is_set() -> None:
    env = _env_example()
    # As shipped, it cannot start: the secret key placeholder is refused.
    with pytest.raises(SettingsError) as refused:
        load_settings(env)
    assert refused.value.variable == "FAIRWATCH_SECRET_KEY"
    settings = load_settings(env | {"FAIRWATCH_SECRET_KEY": "x" * 48})
    assert settings.environment is Environment.PRODUCTION
    assert not settings.create_demo
    # It points at what compose.yaml provides: its services and the master key secret.
    services = _compose()["services"]
    assert settings.database_url is not None
    assert urlsplit(settings.database_url).hostname in services
    assert settings.s3 is not None
    assert settings.s3.endpoint.partition(":")[0] in services
    assert settings.master_key_file is not None
    assert settings.master_key_file.parent == Path("/run/secrets")
    for name in _fairwatch_services():
        assert settings.master_key_file.name in services[name]["secrets"], name
