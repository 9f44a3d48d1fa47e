"""tools/training_summary.py: a run's cost and learning curve from its
metrics.jsonl, checked against sums worked out by hand."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import training_summary as tool  # pylint: disable=g-import-not-at-top,wrong-import-position


def write_run(workdir: pathlib.Path, records: list[dict], batch_size=4):
  workdir.mkdir(exist_ok=True)
  (workdir / "config.json").write_text(
      json.dumps({"train": {"batch_size": batch_size, "log_every": 50}}))
  (workdir / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records))


# A run logged every 50 steps and stopped by a pre-emption at step 230, as
# train.py writes it: each step's scalars in separate records, the quick
# evaluation at step 200.
RECORDS = [
    {"step": 50, "loss": 0.8, "grad_norm": 2.0, "learning_rate": 1e-4},
    {"step": 50, "steps_per_sec": 0.5},
    {"step": 100, "loss": 0.4, "grad_norm": 1.0, "learning_rate": 2e-4},
    {"step": 100, "steps_per_sec": 1.0},
    {"step": 150, "loss": 0.2, "grad_norm": 0.5, "learning_rate": 3e-4},
    {"step": 150, "steps_per_sec": 2.0},
    {"step": 200, "loss": 0.1, "grad_norm": 0.25, "learning_rate": 4e-4},
    {"step": 200, "steps_per_sec": 2.0},
    {"step": 200, "val_psnr": 21.5, "val_ssim": 0.75},
    {"step": 230, "loss": 0.3, "grad_norm": 0.5, "learning_rate": 5e-4},
    {"step": 230, "steps_per_sec": 0.25},
]


def test_blocks_totals_and_time_by_hand(tmp_path):
  write_run(tmp_path, RECORDS)
  records = tool.read_records(str(tmp_path / "metrics.jsonl"))
  summary = tool.summarize(records, tool.read_batch_size(
      str(tmp_path / "config.json")), every=100)
  # 50/0.5 + 50/1 + 50/2 + 50/2 + 30/0.25 seconds.
  seconds = 100 + 50 + 25 + 25 + 120
  assert summary["steps"] == 230 and summary["images_seen"] == 920
  assert summary["train_hours"] == pytest.approx(seconds / 3600)
  assert summary["steps_per_sec"] == pytest.approx(230 / seconds)
  rows = summary["rows"]
  assert [r["step"] for r in rows] == [100, 200, 230]
  assert [r["loss"] for r in rows] == pytest.approx([0.6, 0.15, 0.3])
  assert [r["grad_norm"] for r in rows] == pytest.approx([1.5, 0.375, 0.5])
  assert [r["learning_rate"] for r in rows] == [2e-4, 4e-4, 5e-4]
  assert [r["val_psnr"] for r in rows] == [None, 21.5, None]
  assert [r["val_ssim"] for r in rows] == [None, 0.75, None]


def test_a_line_cut_by_a_kill_is_left_out(tmp_path):
  write_run(tmp_path, RECORDS[:4])
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 150, "lo')
  records = tool.read_records(str(tmp_path / "metrics.jsonl"))
  assert sorted(records) == [50, 100]
  assert records[100] == {"loss": 0.4, "grad_norm": 1.0,
                          "learning_rate": 2e-4, "steps_per_sec": 1.0}


def test_the_command_prints_the_table_and_writes_json(tmp_path):
  write_run(tmp_path / "run", RECORDS)
  out = tmp_path / "summary.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "training_summary.py"),
       str(tmp_path / "run"), "--every=100", f"--json={out}"],
      capture_output=True, text=True, check=True)
  lines = result.stdout.splitlines()
  assert lines[2] == "| 100 | 0.6000 | 1.500 | 2.00e-04 |  |  |"
  assert lines[3] == "| 200 | 0.1500 | 0.375 | 4.00e-04 | 21.50 | 0.750 |"
  assert lines[-1] == ("230 steps, 920 images seen, 0.09 h in the training "
                       "loop (0.719 steps/s)")
  assert json.loads(out.read_text())["images_seen"] == 920


@pytest.mark.parametrize("damage, expected", [
    ("no metrics", "metrics.jsonl: no such file"),
    ("bad line", "metrics.jsonl:3: expected a JSON object with a step"),
    ("no batch size", "config.json: expected the run's config as JSON with "
     "train.batch_size"),
])
def test_bad_workdirs_get_one_line_errors(tmp_path, damage, expected):
  write_run(tmp_path, RECORDS[:2])
  if damage == "no metrics":
    (tmp_path / "metrics.jsonl").unlink()
  elif damage == "bad line":
    with open(tmp_path / "metrics.jsonl", "a") as f:
      f.write('{"loss": 0.5}\n{"step": 100}\n')
  else:
    (tmp_path / "config.json").write_text('{"train": {}}')
  result = subprocess.run(
      [sys.executable, str(ROOT / "tools" / "training_summary.py"),
       str(tmp_path)], capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.startswith("error: ") and expected in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
