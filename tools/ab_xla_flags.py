r"""A/B of XLA flags, environment variables and configs on the train step.

  python tools/ab_xla_flags.py --config=configs/celeba64.py --batch=16 \
      --steps=5 --rounds=3 --out=ab.json \
      --variant="ours=" \
      --variant="vector512=--xla_cpu_prefer_vector_width=512" \
      --variant="nproc3=PJRT_NPROC=3" \
      --variant="default=FFC_DDPM_XLA_FLAGS=0" \
      --variant="wide=--config.model.model_channels=64" \
      --variant="batch32=--batch=32"

Each --variant is NAME=SETTINGS, SETTINGS a space-separated list of XLA
flags (`--xla_...`, added to XLA_FLAGS beside the project's own flags of
`ffc_ddpm.xla_flags`), environment variables (`KEY=VALUE`;
FFC_DDPM_XLA_FLAGS=0 leaves the project's flags out; PYTHONPATH=TREE times
the ffc_ddpm of another checkout, such as a `git worktree` of a branch, so
a change to the code is A/B'd the same way), config overrides of this
variant alone (`--config.X=V`, after the shared ones) and its own batch
(`--batch=N`), so that configs of different cost are timed side by side
through the same drift of the machine. XLA reads its flags
once per process, so every variant runs in a process of its own: each round
starts one per variant, in the order given, which compiles the train step
(`tools/benchmark.py`'s `bench_train`, random data) and times --steps steps
after one untimed step. A variant's result is the median over the rounds,
so a drift of the machine (another job, the clock) touches every variant
alike. Prints a Markdown table (batch, median step, images/s, every
round, ratio to the first variant); --out also writes it as JSON, with
each variant's parameter count and XLA's FLOPs per step. --config.X=V
overrides outside a --variant reach every process. Time on an otherwise
idle machine only.
"""

import json
import os
import subprocess
import sys
from typing import NamedTuple

from absl import app
from absl import flags
import numpy as np

from ffc_ddpm import configuration

HERE = os.path.dirname(os.path.abspath(__file__))


class Variant(NamedTuple):
  name: str
  xla: list[str]  # XLA flags
  env: dict[str, str]  # environment variables
  config: list[str]  # --config.X=V overrides of this variant alone
  batch: int | None  # its own batch size, or None for --batch


def parse_variant(spec: str) -> Variant:
  """'NAME=--flag KEY=VALUE --config.X=V --batch=N' -> Variant."""
  name, sep, settings = spec.partition("=")
  if not sep or not name:
    raise ValueError(f"--variant={spec}: expected NAME=SETTINGS")
  xla, env, config, batch = [], {}, [], None
  for token in settings.split():
    if token.startswith(("--config.", "--noconfig.")):
      config.append(token)
    elif token.startswith("--batch="):
      value = token.partition("=")[2]
      if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--variant={spec}: {token!r}: expected --batch=N, "
                         "N a positive integer")
      batch = int(value)
    elif token.startswith("--"):
      xla.append(token)
    elif "=" in token and not token.startswith("="):
      key, value = token.split("=", 1)
      env[key] = value
    else:
      raise ValueError(f"--variant={spec}: {token!r} is neither an XLA flag "
                       "(--name=value) nor an environment variable "
                       "(KEY=VALUE)")
  return Variant(name, xla, env, config, batch)


def variant_environment(xla: list[str], env: dict[str, str],
                        base: dict[str, str]) -> dict[str, str]:
  """`base` with `env` set and `xla` appended to its XLA_FLAGS."""
  out = dict(base)
  out.update(env)
  out["XLA_FLAGS"] = " ".join([out.get("XLA_FLAGS", "")] + xla).strip()
  return out


def time_variant(config_args: list[str], batch: int, steps: int,
                 environment: dict[str, str]) -> dict:
  """One process: `bench_train`'s row for the config, in `environment`."""
  command = [sys.executable, os.path.abspath(__file__), "--child",
             f"--batch={batch}", f"--steps={steps}", *config_args]
  result = subprocess.run(command, env=environment, capture_output=True,
                          text=True, check=False)
  if result.returncode != 0:
    tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
    raise RuntimeError(f"a timing process failed: {tail[0]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def ab(variants: list[str], config_args: list[str], batch: int, steps: int,
       rounds: int) -> dict:
  """{"rows": [{name, settings, batch, step_ms (median), images_per_s,
  rounds_ms, params_m, tflop_per_step}], ...}."""
  parsed = [parse_variant(v) for v in variants]
  names = [v.name for v in parsed]
  if len(set(names)) != len(names):
    raise ValueError(f"--variant names must differ: {', '.join(names)}")
  times, cost = {name: [] for name in names}, {}
  for _ in range(rounds):
    for v in parsed:
      row = time_variant(config_args + v.config, v.batch or batch, steps,
                         variant_environment(v.xla, v.env, dict(os.environ)))
      times[v.name].append(row["step_ms"])
      cost[v.name] = {k: row[k] for k in ("params_m", "tflop_per_step")}
  rows = []
  for v, spec in zip(parsed, variants):
    step_ms = float(np.median(times[v.name]))
    rows.append({"name": v.name, "settings": spec.partition("=")[2],
                 "batch": v.batch or batch, "step_ms": step_ms,
                 "images_per_s": (v.batch or batch) / step_ms * 1e3,
                 "rounds_ms": times[v.name], **cost[v.name]})
  return {"config": config_args, "batch": batch, "steps": steps,
          "rounds": rounds, "rows": rows}


def markdown(table: dict) -> str:
  first = table["rows"][0]["step_ms"]
  lines = ["| variant | settings | batch | step (ms, median) | images/s | "
           "rounds (ms) | vs first |", "|---|---|---|---|---|---|---|"]
  for row in table["rows"]:
    rounds = ", ".join(f"{t:.0f}" for t in row["rounds_ms"])
    lines.append(f"| {row['name']} | `{row['settings'] or '(none)'}` | "
                 f"{row['batch']} | {row['step_ms']:.0f} | "
                 f"{row['images_per_s']:.2f} | {rounds} | "
                 f"{row['step_ms'] / first:.3f} |")
  return "\n".join(lines) + "\n"


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program, so that
  tests can import its functions beside other tools' flags."""
  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags
  global _CONFIG, _VARIANTS, _BATCH, _STEPS, _ROUNDS, _OUT, _CHILD
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config of the network to train.", lock_config=True)
  _VARIANTS = flags.DEFINE_multi_string(
      "variant", [], "NAME=SETTINGS (XLA flags, KEY=VALUE, --config.X=V, "
      "--batch=N), repeated.")
  _BATCH = flags.DEFINE_integer("batch", 16, "Global batch size.")
  _STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per process.")
  _ROUNDS = flags.DEFINE_integer("rounds", 3, "Processes per variant.")
  _OUT = flags.DEFINE_string("out", None, "Also write the table as JSON.")
  _CHILD = flags.DEFINE_bool("child", False, "(internal) time one process.")


def main(argv) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    sys.exit("error: --config is required")
  if _CHILD.value:
    sys.path.insert(0, HERE)
    import benchmark  # pylint: disable=g-import-not-at-top
    row = benchmark.bench_train(_CONFIG.value, _BATCH.value, _STEPS.value)
    print(json.dumps(row))
    return
  if not _VARIANTS.value:
    sys.exit("error: give at least one --variant=NAME=SETTINGS")
  config_args = [a for a in sys.argv[1:] if a.startswith(("--config",
                                                          "--noconfig."))]
  try:
    table = ab(_VARIANTS.value, config_args, _BATCH.value, _STEPS.value,
               _ROUNDS.value)
  except (ValueError, RuntimeError) as e:
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(markdown(table), end="")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(table, f, indent=2)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=configuration.parse_tool_flags)
