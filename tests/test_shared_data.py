"""Tests that need the licensed shared data say so: skipped with one line
on a user's clone without it, required under CI."""

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
NEEDS_DATA = ("def test_reads_faces(shared_dir):\n"
              "  assert (shared_dir / 'data').is_dir()\n\n"
              "def test_needs_nothing():\n"
              "  assert True\n")


def run_suite(tmp_path: pathlib.Path, **env) -> subprocess.CompletedProcess:
  """pytest on a copy of conftest.py and a test that uses `shared_dir`,
  with the shared folder pointed at a path that does not exist."""
  suite = tmp_path / "suite"
  suite.mkdir()
  shutil.copy(ROOT / "tests" / "conftest.py", suite / "conftest.py")
  (suite / "test_it.py").write_text(NEEDS_DATA)
  environment = {k: v for k, v in os.environ.items() if k != "CI"}
  environment.update(FFC_DDPM_SHARED=str(tmp_path / "no_shared"), **env)
  return subprocess.run(
      [sys.executable, "-m", "pytest", "-rs", "-q", "-p", "no:cacheprovider",
       str(suite)], cwd=tmp_path, env=environment, capture_output=True,
      text=True, timeout=120)


def test_without_the_data_its_tests_are_skipped_saying_why(tmp_path):
  result = run_suite(tmp_path)
  assert result.returncode == 0, result.stdout
  assert "1 passed, 1 skipped" in result.stdout
  skipped = [l for l in result.stdout.splitlines() if l.startswith("SKIPPED")]
  assert len(skipped) == 1
  assert (f"needs the shared data folder (CelebA faces, masks, reference "
          f"outputs), not found at {tmp_path / 'no_shared'}; set "
          "FFC_DDPM_SHARED=PATH to a copy") in skipped[0]


def test_under_ci_missing_data_fails_the_run(tmp_path):
  result = run_suite(tmp_path, CI="true")
  assert result.returncode == 1, result.stdout
  assert "1 passed, 1 error" in result.stdout
  assert "CI: needs the shared data folder" in result.stdout


def test_the_mark_selects_the_tests_that_need_the_data(tmp_path):
  result = run_suite(tmp_path, PYTEST_ADDOPTS="-m 'not shared_data'")
  assert result.returncode == 0, result.stdout
  assert "1 passed, 1 deselected" in result.stdout
