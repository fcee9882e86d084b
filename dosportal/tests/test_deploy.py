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
