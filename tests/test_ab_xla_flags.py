"""tools/ab_xla_flags.py: variants parsed, and each one's settings reach
its own timing process."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import ab_xla_flags as tool  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_a_variant_is_xla_flags_environment_config_and_batch():
  assert tool.parse_variant("ours=") == ("ours", [], {}, [], None)
  assert tool.parse_variant(
      "v=--xla_a=1 PJRT_NPROC=3 --xla_b=x=y --config.model.x=2 --batch=32 "
      "--noconfig.train.y") == (
          "v", ["--xla_a=1", "--xla_b=x=y"], {"PJRT_NPROC": "3"},
          ["--config.model.x=2", "--noconfig.train.y"], 32)
  env = tool.variant_environment(["--xla_b=2"], {"K": "v"},
                                 {"XLA_FLAGS": "--xla_a=1", "PATH": "p"})
  assert env == {"XLA_FLAGS": "--xla_a=1 --xla_b=2", "K": "v", "PATH": "p"}


@pytest.mark.parametrize("spec, message", [
    ("noequals", "expected NAME=SETTINGS"),
    ("=--xla_a=1", "expected NAME=SETTINGS"),
    ("v=stray", "'stray' is neither"),
    ("v=--batch=0", "expected --batch=N"),
    ("v=--batch=many", "expected --batch=N"),
])
def test_bad_variants_are_one_line(spec, message):
  with pytest.raises(ValueError, match=message):
    tool.parse_variant(spec)


def test_each_variant_runs_in_its_own_process_with_its_settings(tmp_path):
  """A variant's dump flag reaches its process, which writes HLO there;
  its config overrides and batch reach its process alone."""
  dump = tmp_path / "dump"
  out = tmp_path / "ab.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "ab_xla_flags.py"),
       f"--config={ROOT / 'configs' / 'test.py'}", "--batch=2", "--steps=1",
       "--rounds=1", f"--out={out}", "--variant=ours=",
       f"--variant=dumped=--xla_dump_to={dump} FFC_DDPM_XLA_FLAGS=0",
       "--variant=narrow=--config.model.channel_mult=(1,1) --batch=1",
       "--config.model.ffc.enabled=False"],
      capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  table = json.loads(out.read_text())
  ours, dumped, narrow = table["rows"]
  assert [r["name"] for r in table["rows"]] == ["ours", "dumped", "narrow"]
  assert all(r["step_ms"] > 0 and len(r["rounds_ms"]) == 1
             for r in table["rows"])
  assert [r["batch"] for r in table["rows"]] == [2, 2, 1]
  assert narrow["images_per_s"] == pytest.approx(1e3 / narrow["step_ms"])
  # The narrow variant's own config reached its process alone.
  assert dumped["params_m"] == ours["params_m"] > narrow["params_m"] > 0
  assert table["config"][-1] == "--config.model.ffc.enabled=False"
  assert any(dump.iterdir())
  assert "| dumped |" in result.stdout
