"""The README says what the code does: every setting in its configuration table,
the same Kafka version everywhere, every exit code listed."""

from __future__ import annotations

import re
from pathlib import Path

from consumer.config import Settings
from consumer.entrypoints import exit_codes

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    end = README.find("\n#", start + len(title) + 2)
    return README[start:end]


def table_first_column(text: str) -> str:
    return "\n".join(line.split("|")[1] for line in text.splitlines() if line.startswith("| `"))


def test_every_setting_is_in_the_configuration_table_and_nothing_else() -> None:
    table = table_first_column(section("## Configuration"))
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    read = {name.upper() for name in Settings.model_fields}
    assert read - documented == set(), "settings the README's table does not list"
    assert documented - read == set(), "variables in the README's table the code does not read"


def test_one_kafka_version_in_the_services_the_compose_file_and_the_readme() -> None:
    pom = (REPO / "services" / "kafka" / "pom.xml").read_text()
    [version] = re.findall(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    compose = (REPO / "docker-compose.yml").read_text()
    assert re.findall(r"image: apache/kafka:(\S+)", compose) == [version]
    conftest = (REPO / "tests" / "integration" / "conftest.py").read_text()
    assert re.findall(r'"apache/kafka:([^"]+)"', conftest) == [version]
    assert f"Apache Kafka {version}\n" in README or f"Apache Kafka {version} " in README
    assert f"`apache/kafka:{version}`" in README


def test_every_exit_code_is_listed() -> None:
    codes = {value for name, value in vars(exit_codes).items() if name.startswith("EXIT_")}
    listed = {int(c) for c in re.findall(r"^\| (\d+) \|", section("### Exit codes"), re.M)}
    assert listed == codes
