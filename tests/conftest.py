"""Shared test fixtures: the repository root and the shared data beside it."""

import os
import pathlib

# The tests' networks are tiny: compiling fast matters more than running fast.
# Set before JAX starts; subprocesses inherit it.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The licensed faces, masks and reference outputs cannot ship with the code:
# CI and the developers have them beside the checkout; anyone else can point
# FFC_DDPM_SHARED at a copy.
SHARED_ENV = "FFC_DDPM_SHARED"
SHARED = pathlib.Path(os.environ.get(SHARED_ENV) or REPO_ROOT.parent / "shared")
SHARED_MARK = "shared_data"
MISSING_SHARED = (f"needs the shared data folder (CelebA faces, masks, "
                  f"reference outputs), not found at {SHARED}; set "
                  f"{SHARED_ENV}=PATH to a copy")


def pytest_configure(config):
  config.addinivalue_line(
      "markers", f"{SHARED_MARK}: needs the shared data folder (../shared, "
      f"or ${SHARED_ENV}); skipped without it, except under CI")


def pytest_collection_modifyitems(items):
  """Every test that uses the `shared_dir` fixture carries the mark, so
  `-m 'not shared_data'` runs the rest."""
  for item in items:
    if "shared_dir" in getattr(item, "fixturenames", ()):
      item.add_marker(SHARED_MARK)


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """The shared data folder: real faces, masks and reference outputs.

  Without it a test is skipped with one line saying what is missing and
  how to supply it; under CI (CI=true) the data is required, so it fails.
  """
  if not SHARED.is_dir():
    if os.environ.get("CI", "").lower() in ("true", "1"):
      pytest.fail(f"CI: {MISSING_SHARED}", pytrace=False)
    pytest.skip(MISSING_SHARED)
  return SHARED
