"""deploy/: what can be checked without Docker or systemd on this machine.

The compose file parses and names what the README documents; every command the
Dockerfile, compose and the systemd units run exists in the project (management commands
and their options, ASGI apps, uvicorn's flags, copied paths); every metric the Grafana
dashboard plots is defined in dosportal/metrics.py, and every one defined is plotted.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from importlib import import_module
from pathlib import Path

import pytest
import yaml
from django.core.management import get_commands, load_command_class
from prometheus_client import Counter, Gauge, Histogram

from dosportal import metrics
from dosportal.tests.test_settings import run_django

BASE_DIR = Path(__file__).resolve().parents[2]
DEPLOY = BASE_DIR / "deploy"
README = (BASE_DIR / "README.md").read_text()


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def systemd_commands() -> list[list[str]]:
    commands = []
    for unit in DEPLOY.glob("*.service"):
        for line in unit.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in {"ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop"}:
                commands.append(shlex.split(value))
    return commands


@cache
def uvicorn_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "--help"], capture_output=True, text=True, check=True
    ).stdout


def check_command(argv: list[str]) -> None:
    """A command line the deployment runs: a management command with valid options, or
    uvicorn serving an app of this project with flags uvicorn has."""
    program = Path(argv[0]).name
    if program.startswith("python") and argv[1] == "manage.py":
        name, options = argv[2], argv[3:]
        assert name in get_commands(), f"no management command {name!r}"
        parser = load_command_class(get_commands()[name], name).create_parser("manage.py", name)
        parser.parse_args(options)  # exits (SystemExit) on an unknown option
    elif program == "uvicorn":
        module, _, attribute = argv[1].partition(":")
        assert (BASE_DIR / (module.replace(".", "/") + ".py")).exists(), argv[1]
        if module != "dosportal.asgi":  # importing the ASGI entry point would set up a second Django
            assert callable(getattr(import_module(module), attribute))
        flags = [arg.split("=")[0] for arg in argv[2:] if arg.startswith("--")]
        if "--log-config" in argv:
            assert (BASE_DIR / argv[argv.index("--log-config") + 1]).is_file()
        help_text = uvicorn_help()
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"uvicorn has no {flag}"
    elif program in {"mkdir", "rm", "sh"}:
        pass
    else:
        pytest.fail(f"unexpected command {argv}")


# --- compose.yaml --------------------------------------------------------------------------


def test_compose_names_the_portal_postgresql_redis_and_a_development_upstream() -> None:
    services = compose()["services"]

    assert set(services) == {"db", "redis", "upstream", "migrate", "portal"}
    assert services["db"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    portal = services["portal"]["environment"]
    assert portal["DATABASE_URL"].startswith("postgres://dosportal:") and portal["DATABASE_URL"].endswith(
        "@db:5432/dosportal"
    )
    assert portal["REDIS_URL"] == "redis://redis:6379/0"
    assert portal["DOS_AI_UPSTREAM_URL"] == "${DOS_AI_UPSTREAM_URL:-http://upstream:8001/v1}"
    assert services["portal"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_the_readme_documents_every_compose_service_and_variable() -> None:
    document = compose()
    section = README[README.index("## Deployment files") :]
    for service in document["services"]:
        assert f"`{service}`" in section, service
    environment = document["services"]["portal"]["environment"]
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", (DEPLOY / "compose.yaml").read_text()))
    for name in set(environment) | interpolated:
        assert f"`{name}`" in README, f"{name} is not documented in the README"


def test_every_command_compose_runs_exists() -> None:
    services = compose()["services"]
    for name in ("upstream", "migrate"):
        check_command(services[name]["command"])
    healthcheck = services["portal"]["healthcheck"]["test"]
    assert healthcheck[:3] == ["CMD", "python", "-c"]
    compile(healthcheck[3], "healthcheck", "exec")


# --- Dockerfile -------------------------------------------------------------------------------


def test_the_dockerfile_uses_a_slim_python_of_the_projects_version_and_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    base = next(arguments for instruction, arguments in instructions if instruction == "FROM")
    requires = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["project"]["requires-python"]

    assert re.fullmatch(r"python:3\.\d+-slim", base)
    assert base.removeprefix("python:").removesuffix("-slim") == requires.removeprefix(">=")
    assert [arguments for instruction, arguments in instructions if instruction == "USER"] == ["portal"]
    assert "useradd --system --uid 10001" in (DEPLOY / "Dockerfile").read_text()


def test_the_dockerfile_copies_what_exists_and_everything_the_app_needs() -> None:
    copied = []
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY":
            sources = arguments.split()[:-1]
            for source in sources:
                assert (BASE_DIR / source).exists(), source
            copied += sources
    # Every top-level package or folder the running portal reads.
    for needed in (
        "manage.py",
        "requirements.txt",
        "dosportal",
        "accounts",
        "apikeys",
        "billing",
        "templates",
        "static",
    ):
        assert needed in copied, needed


def test_the_dockerfile_runs_commands_that_exist() -> None:
    instructions = dockerfile_instructions()
    runs = " && ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    assert "pip install -r requirements.txt" in runs
    assert "python manage.py collectstatic --noinput" in runs
    (cmd,) = [json.loads(arguments) for instruction, arguments in instructions if instruction == "CMD"]
    assert cmd[:2] == ["sh", "-c"]
    for part in cmd[2].split(" && "):
        check_command(shlex.split(part.removeprefix("exec ").replace('"${WEB_CONCURRENCY:-$(nproc)}"', "4")))
    assert "uvicorn dosportal.asgi:application" in cmd[2] and "--workers" in cmd[2]


def test_collectstatic_runs_with_the_build_time_environment_of_the_dockerfile() -> None:
    env = {"DEBUG": "0", "SECRET_KEY": "collectstatic-only", "DOS_AI_ALLOW_DEV_MODEL": "1"}
    run = next(arguments for instruction, arguments in dockerfile_instructions() if "collectstatic" in arguments)
    for name, value in env.items():
        assert f"{name}={value}" in run

    result = run_django(env, "collectstatic", "--noinput", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "static files copied" in result.stdout


# --- systemd ------------------------------------------------------------------------------


def test_the_systemd_units_run_commands_that_exist() -> None:
    commands = systemd_commands()
    assert len(commands) == 4
    for argv in commands:
        if Path(argv[0]).name == "sh" and argv[1] == "-c":  # a shell only to count the cores: check what it runs
            argv = shlex.split(argv[2].replace("$$", "$").removeprefix("exec "))
        argv = [arg.replace("${WEB_CONCURRENCY:-$(nproc)}", "4") for arg in argv]
        assert argv[0].startswith(("/opt/dosportal/.venv/bin/", "/usr/bin/")), argv
        check_command(argv)
    timer = (DEPLOY / "dosportal-release-stale-holds.timer").read_text()
    assert "OnCalendar=" in timer


# --- Grafana ----------------------------------------------------------------------------------


def defined_metrics() -> dict[str, set[str]]:
    """Metric name -> the series names Prometheus sees for it."""
    suffixes = {Counter: {"_total"}, Gauge: {""}, Histogram: {"_bucket", "_sum", "_count"}}
    defined = {}
    for candidate in vars(metrics).values():
        for kind, endings in suffixes.items():
            if isinstance(candidate, kind):
                defined[candidate._name] = {candidate._name + ending for ending in endings}
    return defined


def test_every_metric_the_dashboard_plots_exists_and_every_metric_is_plotted() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\bdos_ai_[a-z_]+\b", expr)}
    defined = defined_metrics()
    series = set().union(*defined.values())

    assert used <= series, f"not defined in dosportal/metrics.py: {sorted(used - series)}"
    plotted = {name for name, names in defined.items() if names & used}
    assert set(defined) - plotted == {"dos_ai_metrics_scrapes"}
    for expr in expressions:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "dos-ai-gateway"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_the_prometheus_job_sends_the_bearer_token() -> None:
    job = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"


# --- The settlement spool ---------------------------------------------------------------------
# A settlement that waits for PostgreSQL must be written to disk that outlives the worker, by
# the user the worker runs as (issue 21: the shipped files had it under a read-only /app and a
# ProtectSystem=strict root). Not /run or /tmp: both are emptied by a restart.

NOT_LASTING = ("/run/", "/tmp/", "/var/run/", "/dev/shm/")


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            for assignment in shlex.split(arguments):
                name, _, value = assignment.partition("=")
                env[name] = value
    return env


def systemd_settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / unit).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_image_gives_its_spool_directory_to_the_runtime_user_and_declares_it_a_volume() -> None:
    instructions = dockerfile_instructions()
    spool = dockerfile_env()["DOS_AI_SPOOL_DIR"]
    [user] = [arguments for instruction, arguments in instructions if instruction == "USER"]
    [useradd] = [part.split() for _, arguments in instructions for part in arguments.split("&&") if "useradd" in part]
    [volume] = [json.loads(arguments) for instruction, arguments in instructions if instruction == "VOLUME"]
    order = [instruction for instruction, _ in instructions]
    [(made_at, made)] = [(i, arguments) for i, (instruction, arguments) in enumerate(instructions)
                         if instruction == "RUN" and f"mkdir -p {spool}" in arguments]  # fmt: skip
    owner = re.search(r"chown (-R )?(\w+):(\w+) (\S+)", made)

    assert spool.startswith("/var/lib/") and not spool.startswith(NOT_LASTING)
    assert useradd[-1] == user == "portal"  # the user the image creates is the one it runs as
    # The directory (or a parent, recursively) belongs to the user the server runs as...
    assert owner is not None and (owner.group(2), owner.group(3)) == (user, useradd[useradd.index("--gid") + 1])
    assert spool == owner.group(4) or (owner.group(1) and spool.startswith(owner.group(4).rstrip("/") + "/"))
    # ...before it becomes a volume (Docker drops changes made to a volume's path after VOLUME),
    # which happens before the server is started as that user.
    assert volume == [spool]
    assert made_at < order.index("VOLUME") < order.index("USER") < order.index("CMD")


def test_compose_keeps_the_spool_on_a_named_volume_at_the_images_directory() -> None:
    document = compose()
    portal = document["services"]["portal"]
    spool = portal["environment"]["DOS_AI_SPOOL_DIR"]

    assert spool == dockerfile_env()["DOS_AI_SPOOL_DIR"]
    mounts = [volume.split(":") for volume in portal["volumes"]]
    assert [name for name, target in mounts if target == spool] == ["spool"]
    assert "spool" in document["volumes"]
    assert all(not spool.startswith(path.split(":")[0]) for path in portal.get("tmpfs", []))


def test_the_systemd_unit_keeps_the_spool_in_its_state_directory_under_protect_system_strict() -> None:
    unit = systemd_settings("dosportal.service")
    environment = dict(assignment.split("=", 1) for assignment in unit["Environment"])
    spool = environment["DOS_AI_SPOOL_DIR"]

    assert unit["ProtectSystem"] == ["strict"]
    assert unit["StateDirectory"] == ["dosportal"]  # /var/lib/dosportal, the service user's
    assert spool == "/var/lib/dosportal/spool" and not spool.startswith(NOT_LASTING)
    assert "/var/lib/dosportal" in unit["ReadWritePaths"][0].split()
    assert unit["User"] == ["dosportal"]


def _graceful_seconds(command: str) -> int:
    match = re.search(r"--timeout-graceful-shutdown[ =](\d+)", command)
    assert match, f"no --timeout-graceful-shutdown in {command!r}"
    return int(match[1])


def _seconds(value: str) -> int:
    return int(value.removesuffix("s"))


def test_every_deployment_lets_calls_finish_before_it_kills_the_server() -> None:
    """A deploy's stop lets streams end (then settles what each delivered) before SIGKILL, which
    would leave their holds to the dead-worker pass: the supervisor waits longer than uvicorn."""
    unit = systemd_settings("dosportal.service")
    unit_grace = _graceful_seconds(unit["ExecStart"][0])
    assert _seconds(unit["TimeoutStopSec"][0]) > unit_grace >= 30

    [cmd] = [arguments for instruction, arguments in dockerfile_instructions() if instruction == "CMD"]
    image_grace = _graceful_seconds(cmd)
    assert _seconds(compose()["services"]["portal"]["stop_grace_period"]) > image_grace >= 30
