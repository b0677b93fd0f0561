"""Packaging glue that pyproject.toml cannot express: the repository's top-level ``migrations/``
(the Alembic directory) ships inside the wheel as the package ``cmbagent_events.migrations``."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["cmbagent_events", "cmbagent_events.*"], exclude=["*.__pycache__"]),
              "cmbagent_events.migrations", "cmbagent_events.migrations.versions"],
    package_dir={"cmbagent_events.migrations": "migrations",
                 "cmbagent_events.migrations.versions": "migrations/versions"},
)
