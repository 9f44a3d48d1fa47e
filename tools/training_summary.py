r"""A training run's cost and learning curve as numbers, from its workdir.

  python tools/training_summary.py WORKDIR [--every=1000] [--json=OUT.json]

reads WORKDIR/metrics.jsonl (one trajectory: resuming truncates it to the
checkpoint) and WORKDIR/config.json and prints a Markdown table: per block of
--every steps the mean training loss and gradient norm, the learning rate at
its end and the quick evaluation's validation PSNR / SSIM; then the steps,
images seen and the time spent in the training loop, the sum over log
intervals of steps / steps_per_sec (checkpointing and the quick evaluations
included, compiling and restarts not).
"""

import json
import math
import os
import sys

from absl import app
from absl import flags


def read_records(path: str) -> dict[int, dict[str, float]]:
  """metrics.jsonl's complete records merged per step: {step: {name:
  value}}."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file (a training run's "
                            "WORKDIR has metrics.jsonl)")
  records: dict[int, dict[str, float]] = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.endswith("\n"):
        break  # a line the run is writing, or one cut by a kill
      try:
        record = json.loads(line)
        step = int(record.pop("step"))
      except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}:{number}: expected a JSON object with a "
                         "step") from None
      records.setdefault(step, {}).update(record)
  return records


def read_batch_size(path: str) -> int:
  """train.batch_size of a run's config.json."""
  try:
    with open(path) as f:
      return int(json.load(f)["train"]["batch_size"])
  except (OSError, ValueError, KeyError, TypeError):
    raise ValueError(f"{path}: expected the run's config as JSON with "
                     "train.batch_size") from None


def summarize(records: dict[int, dict[str, float]], batch_size: int,
              every: int) -> dict:
  """Totals and one row per block of `every` steps (the last may be short)."""
  if every < 1:
    raise ValueError(f"--every={every}: expected a positive number of steps")
  steps = sorted(records)
  if not steps:
    raise ValueError("metrics.jsonl has no records")
  seconds, previous = 0.0, 0
  for step in steps:
    rate = records[step].get("steps_per_sec")
    if rate:
      seconds += (step - previous) / rate
      previous = step
  rows = []
  for end in range(every, steps[-1] + every, every):
    block = [records[s] for s in steps if end - every < s <= end]
    mean = lambda name: _mean([r[name] for r in block if name in r])
    last = lambda name: next((r[name] for r in reversed(block) if name in r),
                             None)
    rows.append({"step": min(end, steps[-1]), "loss": mean("loss"),
                 "grad_norm": mean("grad_norm"),
                 "learning_rate": last("learning_rate"),
                 "val_psnr": last("val_psnr"), "val_ssim": last("val_ssim")})
  return {"steps": steps[-1], "images_seen": steps[-1] * batch_size,
          "train_hours": seconds / 3600,
          "steps_per_sec": steps[-1] / seconds if seconds else None,
          "rows": rows}


def _mean(values: list[float]) -> float | None:
  return math.fsum(values) / len(values) if values else None


def markdown(summary: dict) -> str:
  """The summary as a Markdown table and one line of totals."""
  cell = lambda v, spec: "" if v is None else format(v, spec)
  lines = ["| step | loss | grad norm | learning rate | val PSNR | val SSIM |",
           "|---|---|---|---|---|---|"]
  for r in summary["rows"]:
    lines.append(f"| {r['step']:,} | {cell(r['loss'], '.4f')} | "
                 f"{cell(r['grad_norm'], '.3f')} | "
                 f"{cell(r['learning_rate'], '.2e')} | "
                 f"{cell(r['val_psnr'], '.2f')} | "
                 f"{cell(r['val_ssim'], '.3f')} |")
  lines.append("")
  lines.append(f"{summary['steps']:,} steps, {summary['images_seen']:,} "
               f"images seen, {summary['train_hours']:.2f} h in the training "
               f"loop ({cell(summary['steps_per_sec'], '.3f')} steps/s)")
  return "\n".join(lines)


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program."""
  global _EVERY, _JSON
  _EVERY = flags.DEFINE_integer("every", 1000, "Steps per table row.")
  _JSON = flags.DEFINE_string("json", None, "Also write the summary here.")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: training_summary.py WORKDIR [--every=N] "
                         "[--json=FILE]")
  workdir = argv[1]
  try:
    summary = summarize(read_records(os.path.join(workdir, "metrics.jsonl")),
                        read_batch_size(os.path.join(workdir, "config.json")),
                        _EVERY.value)
  except (OSError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(markdown(summary))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
