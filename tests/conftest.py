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
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """`../shared` next to the checkout: real faces, masks and reference outputs."""
  if not SHARED.is_dir():
    raise FileNotFoundError(f"expected the shared data folder at {SHARED}")
  return SHARED
