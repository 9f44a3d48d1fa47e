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

from ffc_ddpm import configuration

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
  """Compiles what a run computes per batch (`loaded.sampler`, the mean of
  K, the scores) by doing it once on the evaluation's first batch, so that
  a run's time does not include compilation."""
  # pylint: disable=g-import-not-at-top
  import jax
  from ffc_ddpm import evaluate, inference, parallel
  from ffc_ddpm.data import pipeline
  ec = config.eval
  examples = inference.examples_per_call(ec.batch_size, ec.num_samples)
  local = next(iter(pipeline.eval_batches(
      config, ec.split, ec.masks[0], min(examples, ec.num_images),
      examples)))
  batch = parallel.global_batch(local, loaded.mesh)
  root = jax.random.key(config.seed)
  samples = inference.sample_k(
      loaded, batch["image"], batch["mask"], batch["index"],
      jax.random.fold_in(root, evaluate.EVAL),
      jax.random.fold_in(root, evaluate.EVAL_EXTRA), ec.num_samples)
  mean = inference.mean_of_samples(samples, batch["image"], batch["mask"])
  jax.block_until_ready([scorer.scores(out, batch["image"])
                         for out in (samples[:, 0], mean)])


def timed_run(config, loaded, scorer, out_dir: str, warmup: bool) -> tuple:
  """(results, wall seconds) of one run's evaluation into `out_dir`; a
  finished run with the same settings (its timing.json) is reused."""
  # pylint: disable=g-import-not-at-top
  import jax
  from ffc_ddpm import evaluate
  # A reused run must have scored the same images in the same way, and
  # been timed on the same batches after the same warm-up.
  settings = dict(evaluate.run_settings(config, loaded.step, loaded.weights),
                  timed={f: config.eval[f] for f in TIMED_FIELDS},
                  warmup=warmup)
  settings = json.loads(json.dumps(settings, default=str))
  timing = _read_json(os.path.join(out_dir, TIMING_FILE))
  results = _read_json(os.path.join(out_dir, "results.json"))
  if timing and results and timing.get("settings") == settings:
    logging.info("%s: reusing the finished run", out_dir)
    return results, timing["wall_s"]
  lead = jax.process_index() == 0
  if lead and os.path.isdir(out_dir):  # a partial or outdated run: set
    evaluate.archive(out_dir)           # aside, and timed afresh
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
  from ffc_ddpm import evaluate, inference, lock, parallel
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
    scorer = evaluate.Scorer(config, mesh)
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
      with open(os.path.join(out_dir, STEM + ".md"), "w") as f:
        f.write(table_markdown(table))
      plot(table).save(os.path.join(out_dir, STEM + ".png"))
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
  """(width, height) of the plot: one panel per mask, the legend below."""
  return PANEL[0] * num_masks, PANEL[1] + LEGEND_HEIGHT


def _font(size: int = 13):
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1: the fixed bitmap font
    return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """Round tick values spanning [lo, hi], about `count` of them."""
  raw = (hi - lo) / count
  magnitude = 10 ** math.floor(math.log10(raw))
  spacing = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
  first = math.ceil(lo / spacing) * spacing
  return [first + i * spacing for i in range(int((hi - first) / spacing) + 1)]


def _dashed(draw, points, fill, width=2, dash=8, gap=5) -> None:
  """A dashed polyline, the pattern continuing across vertices."""
  phase = 0.0
  for (x0, y0), (x1, y1) in zip(points, points[1:]):
    length = math.hypot(x1 - x0, y1 - y0)
    pos = 0.0
    while pos < length:
      period = phase % (dash + gap)
      step = min((dash - period) if period < dash else (dash + gap - period),
                 length - pos)
      if period < dash:
        a, b = pos / length, (pos + step) / length
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                   (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                  fill=fill, width=width)
      pos += step
      phase += step


def _lines(table: dict) -> list[tuple[str, str]]:
  """(sampler, spacing) of each plot line, in the table's order."""
  return [(s, sp) for s in table["samplers"] for sp in table["spacings"]]


def _panel(draw, left: int, table: dict, mask: str, y_range, font) -> None:
  """One mask's axes, ticks, grid and lines, in the panel at x = left."""
  width, height = PANEL
  box = (left + 62, 28, left + width - 16, height - 46)  # the plotting area
  steps = sorted({r["steps"] for r in table["rows"]})
  x_lo, x_hi = math.log(steps[0] / 1.3), math.log(steps[-1] * 1.3)
  y_lo, y_hi = y_range
  to_x = lambda s: box[0] + (math.log(s) - x_lo) / (x_hi - x_lo) * (
      box[2] - box[0])
  to_y = lambda v: box[3] - (v - y_lo) / (y_hi - y_lo) * (box[3] - box[1])
  grey, black = (225, 225, 225), (0, 0, 0)
  for s in steps:
    x = to_x(s)
    draw.line([(x, box[1]), (x, box[3])], fill=grey)
    draw.line([(x, box[3]), (x, box[3] + 5)], fill=black)
    draw.text((x, box[3] + 7), str(s), fill=black, font=font, anchor="mt")
  for v in _nice_ticks(y_lo, y_hi):
    y = to_y(v)
    draw.line([(box[0], y), (box[2], y)], fill=grey)
    draw.line([(box[0] - 5, y), (box[0], y)], fill=black)
    draw.text((box[0] - 7, y), f"{v:g}", fill=black, font=font, anchor="rm")
  draw.rectangle(box, outline=black)
  draw.text(((box[0] + box[2]) / 2, 8), f"{mask} mask: PSNR (dB)",
            fill=black, font=font, anchor="mt")
  draw.text(((box[0] + box[2]) / 2, height - 8),
            "network calls (log scale)", fill=black, font=font, anchor="mb")
  for i, (sampler, spacing) in enumerate(_lines(table)):
    colour = COLOURS[i % len(COLOURS)]
    rows = sorted((r for r in table["rows"] if r["sampler"] == sampler
                   and r["timestep_spacing"] == spacing),
                  key=lambda r: r["steps"])
    for key, dashed in (("one", False), ("mean", True)):
      values = [(r["steps"], r["masks"][mask]["psnr"] if key == "one" else
                 r["masks"][mask]["mean_of_k"]["psnr"]) for r in rows]
      points = [(to_x(s), to_y(v)) for s, v in values if math.isfinite(v)]
      if dashed:
        _dashed(draw, points, colour)
      elif len(points) > 1:
        draw.line(points, fill=colour, width=2)
      for x, y in points:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)


def _legend(draw, top: int, table: dict, font) -> None:
  """Sampler colours, then the line styles, in one row."""
  x, y, black = 62, top + LEGEND_HEIGHT // 2, (0, 0, 0)
  entries = [(line_label(s, sp, table["spacings"]),
              COLOURS[i % len(COLOURS)], False)
             for i, (s, sp) in enumerate(_lines(table))]
  entries += [("one sample", black, False),
              (f"mean of {table['k']}", black, True)]
  for label, colour, dashed in entries:
    if dashed:
      _dashed(draw, [(x, y), (x + 28, y)], colour)
    else:
      draw.line([(x, y), (x + 28, y)], fill=colour, width=2)
    x += 34
    draw.text((x, y), label, fill=black, font=font, anchor="lm")
    x += int(draw.textlength(label, font=font)) + 22


def plot(table: dict):
  """The PNG (a PIL image): PSNR against network calls, log-x, one panel per
  mask; one colour per sampler (and spacing), solid = one sample, dashed =
  mean of K."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  masks = table["masks"]
  image = Image.new("RGB", plot_size(len(masks)), (255, 255, 255))
  draw, font = ImageDraw.Draw(image), _font()
  values = [v for r in table["rows"] for e in r["masks"].values()
            for v in (e["psnr"], e["mean_of_k"]["psnr"]) if math.isfinite(v)]
  lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
  pad = max(0.05 * (hi - lo), 0.25)
  for i, mask in enumerate(masks):
    _panel(draw, i * PANEL[0], table, mask, (lo - pad, hi + pad), font)
  _legend(draw, PANEL[1], table, font)
  return image


# ------------------------------------------------------------------ files
def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=2)
  os.replace(path + ".tmp", path)


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
