"""Fixtures for the data tests: the default config and the repository tools."""

import importlib.util
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_module(relative_path: str):
  """Imports a repository file that is not in a package (configs, tools)."""
  path = REPO_ROOT / relative_path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="session")
def default_config():
  """A function returning a fresh copy of configs/default.py's config."""
  return load_module("configs/default.py").get_config


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return REPO_ROOT
