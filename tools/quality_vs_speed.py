"""Quality against speed: one model under several samplers and step counts.

  python tools/quality_vs_speed.py --config=configs/celebahq.py \
      --workdir=runs/celebahq --out=runs/celebahq/quality_vs_speed \
      --samplers=ddpm,ddim,dpm_solver --steps=5,10,20,50,100 \
      --num_samples=4 --num_images=100 --masks=center,random

loads the checkpoint of WORKDIR once (the latest, or --step; the EMA weights
when config.eval.use_ema), or a weights file (--weights, with its model
settings, as the main job's --weights), and evaluates it with every sampler
at every step count (network calls: `config.eval.num_steps`) and every
spacing of those calls (--spacings: `config.eval.timestep_spacing` values,
default the config's) on the same images and masks, each run the ordinary
evaluation (`evaluate.evaluate_loaded`) of a config that differs only in
`eval.sampler`, `eval.num_steps`, `eval.timestep_spacing` and `eval.eta`
(kept for DDIM, 0 for the others), with no classical baselines. The model is
scored on its first sample and on the per-pixel mean of K samples
(--num_samples, default config.eval.num_samples). Any config field can be
overridden as in the main job: --config.eval.batch_size=16.

Each run's wall time is measured after its sampler and scores have been
compiled on one batch (--warmup, on by default), from the first batch read
to results.json written: sampling, scoring, grids and data loading.
images/s counts evaluated images (each drawn K times) over all masks.

Writes under OUT:
  runs/<sampler>_<steps>[_<spacing>]/
                           that run's evaluation folder (no suffix for
                           uniform spacing): results.json, results.md,
                           per_image.csv, grids (as WORKDIR/eval), and
                           timing.json; a finished run with the same
                           settings is reused when the command is repeated
  quality_vs_speed.json    one row per (sampler, steps, spacing): per mask
                           PSNR, SSIM and mean_of_k {k, psnr, ssim}; wall_s,
                           images_per_s
  quality_vs_speed.md      the same as a Markdown table
  quality_vs_speed.png     PSNR against network calls (log scale), one panel
                           per mask, one colour per sampler (and spacing);
                           solid = one sample, dashed = mean of K
"""

import json
import math
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ffc_ddpm import configuration, files

TIMING_FILE = "timing.json"
# config.eval fields that `evaluate.run_settings` leaves out (they do not
# change a score) but that change what a run covers or how long it takes.
TIMED_FIELDS = ("num_images", "batch_size", "masks", "baselines",
                "num_grid_images")
STEM = "quality_vs_speed"
PANEL = (480, 360)  # one mask's plot, pixels
LEGEND_HEIGHT = 30
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
           (148, 103, 189), (140, 86, 75))


# ---------------------------------------------------------------- configs
def sweep_config(config, num_samples=None, num_images=None, masks=None):
  """`config` with the sweep's shared evaluation settings overridden."""
  config = config.copy_and_resolve_references()
  if num_samples is not None:
    config.eval.num_samples = num_samples
  if num_images is not None:
    config.eval.num_images = num_images
  if masks:
    config.eval.masks = tuple(masks)
  config.eval.baselines = ()
  return config


def run_config(config, sampler: str, num_steps: int, spacing: str):
  """The config of one run: `config` sampled by `sampler` in `num_steps`
  network calls spread by `spacing` (eta kept for DDIM only: the others
  have none)."""
  config = config.copy_and_resolve_references()
  config.eval.sampler = sampler
  config.eval.num_steps = num_steps
  config.eval.timestep_spacing = spacing
  if sampler != "ddim":
    config.eval.eta = 0.0
  return configuration.validate(config)


def run_name(sampler: str, num_steps: int, spacing: str) -> str:
  suffix = "" if spacing == "uniform" else f"_{spacing}"
  return f"{sampler}_{num_steps}{suffix}"


def line_label(sampler: str, spacing: str, spacings) -> str:
  """A plot line's name: the sampler, and its spacing when several."""
  return sampler if len(spacings) == 1 else f"{sampler} {spacing}"


# ----------------------------------------------------------------- runs
def warm_up(config, loaded, scorer) -> None:
  """Compiles what a run computes per batch by doing it once on the
  evaluation's first batch (`evaluate.score_batch`, the very function the
  run times, grids and FID features included), so that a run's time does
  not include compilation."""
  # pylint: disable=g-import-not-at-top
  from ffc_ddpm import evaluate, inference
  from ffc_ddpm.data import pipeline
  ec = config.eval
  examples = inference.examples_per_call(ec.batch_size, ec.num_samples)
  local = next(iter(pipeline.eval_batches(
      config, ec.split, ec.masks[0], min(examples, ec.num_images),
      examples)))
  evaluate.score_batch(config, loaded, scorer, local, {},
                       with_grid=ec.num_grid_images > 0)


def timed_run(config, loaded, scorer, out_dir: str, warmup: bool) -> tuple:
  """(results, wall seconds) of one run's evaluation into `out_dir`; a
  finished run with the same settings (its timing.json) is reused."""
  # pylint: disable=g-import-not-at-top
  import jax
  from ffc_ddpm import eval_records, evaluate
  # A reused run must have scored the same images in the same way, and
  # been timed on the same batches after the same warm-up.
  settings = dict(evaluate.run_settings(config, loaded.step, loaded.weights),
                  timed={f: config.eval[f] for f in TIMED_FIELDS},
                  warmup=warmup)
  settings = json.loads(json.dumps(settings, default=str))
  timing = files.read_json(os.path.join(out_dir, TIMING_FILE))
  results = files.read_json(os.path.join(out_dir, "results.json"))
  if timing and results and timing.get("settings") == settings:
    logging.info("%s: reusing the finished run", out_dir)
    return results, timing["wall_s"]
  lead = jax.process_index() == 0
  if lead and os.path.isdir(out_dir):  # a partial or outdated run: set
    eval_records.archive(out_dir)       # aside, and timed afresh
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("quality_vs_speed_clean")
  if warmup:
    warm_up(config, loaded, scorer)
  start = time.perf_counter()
  results = evaluate.evaluate_loaded(config, loaded, out_dir, scorer)
  wall = time.perf_counter() - start
  if lead:
    _write_json(os.path.join(out_dir, TIMING_FILE),
                {"settings": settings, "wall_s": wall})
  return results, wall


def table_row(sampler: str, num_steps: int, spacing: str, results: dict,
              wall: float, run_dir: str) -> dict:
  """One (sampler, steps, spacing) row of quality_vs_speed.json."""
  masks = results["masks"]
  scored = sum(entry["num_images"] for entry in masks.values())
  keep = ("psnr", "ssim", "mean_of_k")
  return {"sampler": sampler, "steps": int(num_steps),
          "timestep_spacing": spacing,
          "masks": {m: {k: entry[k] for k in keep} for m, entry in
                    masks.items()},
          "num_images": results["num_images"],
          "wall_s": float(wall),
          "images_per_s": scored / wall if wall > 0 else float("inf"),
          "results": os.path.join(run_dir, "results.json")}


def quality_vs_speed(config, workdir: str | None, out_dir: str, samplers,
                     steps, step: int | None = None, warmup: bool = True,
                     weights_file: str | None = None, spacings=None) -> dict:
  """Scores the checkpoint of `workdir` (or `weights_file`, whose model
  `config` must describe) under every (sampler, steps, spacing; the
  spacings default to config.eval.timestep_spacing) and
  writes the table and the plot into `out_dir`; returns the table
  (quality_vs_speed.json's content). `config` holds the shared evaluation
  settings (`sweep_config`)."""
  # pylint: disable=g-import-not-at-top
  import jax
  from ffc_ddpm import evaluate, inference, lock, parallel, scoring
  from ffc_ddpm.data import masks as masks_lib
  steps = [int(s) for s in steps]
  spacings = list(dict.fromkeys(spacings or [config.eval.timestep_spacing]))
  configs = {(s, n, sp): run_config(config, s, n, sp)
             for s in samplers for sp in spacings for n in steps}
  evaluate.check_config(config)
  for mask in config.eval.masks:
    masks_lib.validate_mask_name(mask)
  rows = []
  with lock.hold_workdir(out_dir):
    mesh = parallel.create_mesh(config.train.model_axis_size)
    scorer = scoring.Scorer(config, mesh)
    model, params, loaded_step, weights = inference.load_weights(
        config, workdir, mesh, step, weights_file)
    for (sampler, num_steps, spacing), cfg in configs.items():
      loaded = inference.Inference(mesh, params, int(loaded_step), weights,
                                   inference.create_sampler(cfg, model))
      run_dir = os.path.join("runs", run_name(sampler, num_steps, spacing))
      logging.info("%s, %d network calls, %s spacing", sampler, num_steps,
                   spacing)
      results, wall = timed_run(cfg, loaded, scorer,
                                os.path.join(out_dir, run_dir), warmup)
      rows.append(table_row(sampler, num_steps, spacing, results, wall,
                            run_dir))
    table = {"workdir": workdir or weights_file, "step": int(loaded_step),
             "weights": weights,
             "model": results["model"],
             "image_size": int(config.data.image_size),
             "masks": list(config.eval.masks),
             "k": int(config.eval.num_samples),
             "samplers": list(samplers), "steps": steps,
             "spacings": spacings, "rows": rows}
    if jax.process_index() == 0:
      _write_json(os.path.join(out_dir, STEM + ".json"), table)
      files.write_text(os.path.join(out_dir, STEM + ".md"),
                       table_markdown(table))
      plot(table, os.path.join(out_dir, STEM + ".png"))
  logging.info("Quality against speed:\n%s", table_markdown(table))
  return table


# ---------------------------------------------------------------- table
def table_markdown(table: dict) -> str:
  """One row per (sampler, steps, spacing): per mask PSNR and SSIM of one
  sample and of the mean of K, then wall time and images/s."""
  k, masks = table["k"], table["masks"]
  head = ["sampler", "network calls", "spacing"]
  for m in masks:
    head += [f"{m} PSNR", f"{m} SSIM", f"{m} PSNR mean of {k}",
             f"{m} SSIM mean of {k}"]
  head += ["wall s", "images/s"]
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for row in table["rows"]:
    cells = [row["sampler"], str(row["steps"]), row["timestep_spacing"]]
    for m in masks:
      e = row["masks"][m]
      cells += [f"{e['psnr']:.2f}", f"{e['ssim']:.3f}",
                f"{e['mean_of_k']['psnr']:.2f}",
                f"{e['mean_of_k']['ssim']:.3f}"]
    cells += [f"{row['wall_s']:.1f}", f"{row['images_per_s']:.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
  num_images = min((r["num_images"] for r in table["rows"]), default=0)
  lines += ["", f"{table['model']}, {table['weights']} of step "
            f"{table['step']} ({table['workdir']}); {num_images} images per "
            f"mask at {table['image_size']}x{table['image_size']}, mean of "
            f"K = {k} samples. PSNR (dB, MAX = 255) and SSIM on 8-bit images. "
            "Wall time: sampling, scoring and data loading, after "
            "compilation; images/s counts images over all masks, each drawn "
            "K times.", "", f"![PSNR against network calls]({STEM}.png)"]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- plot
def plot_size(num_masks: int) -> tuple[int, int]:
  """(width, height) of the plot in pixels: one panel per mask, the legend
  below."""
  return PANEL[0] * num_masks, PANEL[1] + LEGEND_HEIGHT


def _lines(table: dict) -> list[tuple[str, str]]:
  """(sampler, spacing) of each plot line, in the table's order."""
  return [(s, sp) for s in table["samplers"] for sp in table["spacings"]]


def plot(table: dict, path: str) -> None:
  """Writes the PNG (matplotlib): PSNR against network calls, log-x, one
  panel per mask; one colour per sampler (and spacing), solid = one
  sample, dashed = mean of K."""
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use("Agg")  # files only, no screen
  from matplotlib import pyplot as plt
  masks, dpi = table["masks"], 100
  width, height = plot_size(len(masks))
  figure, axes = plt.subplots(1, len(masks), squeeze=False,
                              figsize=(width / dpi, height / dpi), dpi=dpi)
  steps = sorted({r["steps"] for r in table["rows"]})
  for panel, mask in zip(axes[0], masks):
    for i, (sampler, spacing) in enumerate(_lines(table)):
      colour = tuple(c / 255 for c in COLOURS[i % len(COLOURS)])
      rows = sorted((r for r in table["rows"] if r["sampler"] == sampler
                     and r["timestep_spacing"] == spacing),
                    key=lambda r: r["steps"])
      for style, value in (("-", lambda e: e["psnr"]),
                           ("--", lambda e: e["mean_of_k"]["psnr"])):
        points = [(r["steps"], value(r["masks"][mask])) for r in rows
                  if math.isfinite(value(r["masks"][mask]))]
        if points:
          panel.plot(*zip(*points), style, color=colour, linewidth=2,
                     marker="o", markersize=6,
                     label=(line_label(sampler, spacing, table["spacings"])
                            if style == "-" else None))
    panel.set_xscale("log")
    panel.set_xticks(steps, [str(s) for s in steps])
    panel.minorticks_off()
    panel.grid(True, color="0.88")
    panel.set_title(f"{mask} mask: PSNR (dB)", fontsize=10)
    panel.set_xlabel("network calls (log scale)", fontsize=9)
  styles = [matplotlib.lines.Line2D([], [], color="black", linestyle=s)
            for s in ("-", "--")]
  handles, labels = axes[0][0].get_legend_handles_labels()
  figure.legend(handles + styles,
                labels + ["one sample", f"mean of {table['k']}"],
                loc="lower center", ncol=len(labels) + 2, frameon=False,
                fontsize=9)
  figure.tight_layout(rect=(0, LEGEND_HEIGHT / height, 1, 1))
  figure.savefig(path, dpi=dpi)
  plt.close(figure)


# ------------------------------------------------------------------ files
def _write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.write_json(path, value, indent=2)


# ------------------------------------------------------------------- main
def define_flags() -> None:
  """The command's flags, defined only when it runs as a program, so
  that tests can import its functions beside other tools' flags."""
  global _CONFIG, _WORKDIR, _WEIGHTS, _STEP, _OUT, _SAMPLERS, _STEPS
  global _NUM_SAMPLES, _NUM_IMAGES, _MASKS, _WARMUP, _SPACINGS
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Config file of the model (e.g. configs/celebahq.py).",
      lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "The model's workdir.")
  _WEIGHTS = flags.DEFINE_string(
      "weights", None, "A weights file (tools/export_weights.py) instead of "
      "--workdir; its model settings replace --config's.")
  _STEP = flags.DEFINE_integer("step", None,
                               "Checkpoint step (default: the latest).")
  _OUT = flags.DEFINE_string("out", None, "Output folder.")
  _SAMPLERS = flags.DEFINE_list("samplers", ["ddpm", "ddim", "dpm_solver"],
                                "Samplers (config.eval.sampler values).")
  _STEPS = flags.DEFINE_list(
      "steps", ["5", "10", "20", "50", "100"],
      "Network calls per sample (config.eval.num_steps).")
  _NUM_SAMPLES = flags.DEFINE_integer(
      "num_samples", None,
      "K of the mean of K (default config.eval.num_samples).")
  _NUM_IMAGES = flags.DEFINE_integer(
      "num_images", None, "Images per mask (default config.eval.num_images).")
  _MASKS = flags.DEFINE_list("masks", None,
                             "Mask protocols (default config.eval.masks).")
  _SPACINGS = flags.DEFINE_list(
      "spacings", None, "How the calls are spread over the diffusion's "
      "steps: uniform, quadratic, log_snr (config.eval.timestep_spacing; "
      "default: the config's).")
  _WARMUP = flags.DEFINE_bool(
      "warmup", True, "Compile each sampler on one batch before timing it.")


def main(argv) -> None:
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments: {' '.join(argv[1:])}")
  if (_CONFIG.value is None or not _OUT.value
      or bool(_WORKDIR.value) == bool(_WEIGHTS.value)):
    sys.exit("error: --config, --out and one of --workdir or --weights are "
             "required")
  try:
    steps = [int(s) for s in _STEPS.value]
    config = _CONFIG.value
    # pylint: disable=g-import-not-at-top
    from ffc_ddpm import weights
    if _WEIGHTS.value:
      config, _ = weights.model_config(
          config, weights.read_metadata(_WEIGHTS.value), _WEIGHTS.value)
    else:  # the network the run trained, whatever --config says
      config, changed = weights.run_model_config(config, _WORKDIR.value)
      if changed:
        print(f"warning: model settings taken from {_WORKDIR.value}'s "
              f"{weights.RUN_CONFIG}: {'; '.join(changed)}", file=sys.stderr)
    config = sweep_config(config, _NUM_SAMPLES.value,
                          _NUM_IMAGES.value, _MASKS.value)
    configuration.check_data_path(config)
    quality_vs_speed(config, _WORKDIR.value, _OUT.value, _SAMPLERS.value,
                     steps, step=_STEP.value, warmup=_WARMUP.value,
                     weights_file=_WEIGHTS.value, spacings=_SPACINGS.value)
  except (ValueError, OSError) as e:  # bad settings, missing files
    sys.exit(f"error: {' '.join(str(e).split())}")
  print(f"Wrote {os.path.join(_OUT.value, STEM)}.json, .md and .png")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=configuration.parse_tool_flags)
