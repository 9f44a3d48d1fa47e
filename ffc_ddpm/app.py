r"""A local web page for inpainting: upload a photo, paint the hole, see K fills.

  python -m ffc_ddpm.app --weights=weights/celeba64.npz    # prints the address

(`--config` + `--workdir` [`--step`] serve a workdir's checkpoint; `--config`
with `--weights` takes the file's model as the inpaint command does.) Built on
Gradio (`pip install -e '.[app]'`): its ImageEditor gives a brush with an
adjustable size and an eraser, and its queue runs one request at a time on
the model while the others wait, each with its own inputs and outputs.

The page is a front end of the inpaint command, not a second pipeline: the
photo is read by `photos_lib.read_photo` (the same checks, pixel bound and
one-line messages), the hole is painted or a named mask (`photos_lib.named_hole`
for image 0), and `Inpainter.draw` draws the K samples once, finished as the
command finishes them (`Inpainter.finish`, reduce "none" and "mean") and
written with `images.save_png`. So with the same photo, mask, K, steps and
seed the files equal the command's byte for byte.

Safe by default: it listens on 127.0.0.1 unless --host says otherwise, uploads
are limited to MAX_UPLOAD_BYTES (and the decoder's pixel bound), photos and
results live only in temporary folders (gone at exit) until the user
downloads them, and Gradio's analytics are off.
"""

import copy
import dataclasses
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time

from absl import app as absl_app
from absl import flags
import gradio as gr
import numpy as np

from ffc_ddpm import compositing, configuration, images, inference, inpaint
from ffc_ddpm import models, weights
from ffc_ddpm import photos as photos_lib
from ffc_ddpm.data import masks

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when Gradio would send

# The inpaint command's flags that choose the model; the page sets the rest.
MODEL_FLAGS = ("config", "workdir", "weights", "step", "compilation_cache")
PAINTED = "painted"  # the hole is the brush strokes
NAMED_MASKS = tuple(n for n in masks.MASK_NAMES
                    if not n.startswith(masks.FOLDER_PREFIX))
DEFAULT_K = 8  # the released model's mean of 8 (README, quality.md)
MAX_K = 16
MAX_UPLOAD_BYTES = 64 * 2**20  # a file's bytes (a 20 MP photo's PNG: about
#                                40 MB); its pixels are bounded by read_photo
KEEP_SECONDS = 3600  # results (and Gradio's copies) are deleted after this


# ---------------------------------------------------------------- model
class Model:
  """An Inpainter loaded once, used by one request at a time.

  Another step count is another sampler (`inference.create_sampler`, cached
  by its settings) around the same weights, so changing it loads nothing.
  """

  def __init__(self, inpainter: inpaint.Inpainter):
    self.inpainter = inpainter
    self.lock = threading.Lock()
    self._other = (None, None)  # (steps, Inpainter) last asked for

  @property
  def config(self):
    return self.inpainter.config

  def with_steps(self, num_steps: int) -> inpaint.Inpainter:
    """The inpainter whose sampler takes `num_steps` network calls."""
    if num_steps == self.config.eval.num_steps:
      return self.inpainter
    if self._other[0] != num_steps:
      config = copy.deepcopy(self.config)
      config.eval.num_steps = num_steps
      other = copy.copy(self.inpainter)
      other.config = configuration.validate(config)
      other.loaded = dataclasses.replace(
          self.inpainter.loaded, sampler=inference.create_sampler(
              config, models.create_model(config.model)))
      self._other = (num_steps, other)
    return self._other[1]

  def warm_up(self, num_samples: int = DEFAULT_K) -> None:
    """Inpaints a blank photo of the model's size once: every photo's
    request samples the same shapes, so this compiles the sampler."""
    size = self.config.data.image_size
    blank = photos_lib.photo_from_array(np.zeros((size, size, 3), np.uint8))
    hole = photos_lib.named_hole("center", size, size, self.config, index=0)
    with self.lock:
      self.inpainter.inpaint([blank], [hole], num_samples,
                             bar=_Bar(lambda fraction, text: None,
                                      num_samples, 1))


# --------------------------------------------------------------- inputs
def painted_hole(layers, height: int, width: int) -> np.ndarray:
  """The hole (H, W, 1) float32 painted on the editor's layers: every pixel
  a stroke touched (alpha > 0), at the photo's size (nearest neighbour, as
  the command resizes a mask file of another size)."""
  painted = [np.asarray(layer) for layer in layers or ()]
  painted = [p for p in painted if p.ndim == 3 and p.shape[2] == 4]
  if not painted:
    return np.zeros((height, width, 1), np.float32)
  alpha = np.max([p[..., 3] for p in painted if p.shape == painted[0].shape],
                 axis=0)
  hole = (alpha > 0).astype(np.float32)[..., None]
  if hole.shape[:2] != (height, width):
    hole = photos_lib.resize_hole(hole, height, width)
  return hole


def request_hole(model: Model, mask: str, layers, height: int,
                 width: int) -> np.ndarray:
  """The hole of a request: the painted one, or mask `mask` drawn as the
  command draws it for its first image."""
  if mask == PAINTED:
    hole = painted_hole(layers, height, width)
  elif mask in NAMED_MASKS:
    hole = photos_lib.named_hole(mask, height, width, model.config, index=0)
  else:
    raise ValueError(f"mask={mask!r}: expected {PAINTED} or one of "
                     f"{', '.join(NAMED_MASKS)}")
  if not hole.any():
    raise ValueError("the hole is empty: paint over what should be replaced"
                     " (or choose a named mask)")
  return hole


def check_request(model: Model, num_samples, num_steps,
                  composite: str) -> tuple[int, int]:
  """(K, steps) as integers, or a one-line ValueError naming the field."""
  most = model.config.diffusion.num_steps
  checked = []
  for name, value, top in (("K", num_samples, MAX_K),
                           ("steps", num_steps, most)):
    if not (isinstance(value, (int, float)) and float(value).is_integer()
            and 1 <= value <= top):
      raise ValueError(f"{name}={value!r}: expected an integer from 1 to "
                       f"{top}")
    checked.append(int(value))
  compositing.check(composite)
  return checked[0], checked[1]


# -------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class Files:
  """The PNG files of one request, as the inpaint command writes them."""
  samples: list[str]  # the K samples (the command's --reduce=none)
  uncertainty: str | None  # the colour-mapped std across K > 1 samples
  mask: str  # the hole, white (255) = inpainted
  mean: str | None = None  # their mean (--reduce=mean), for K > 1

  def all(self) -> list[str]:
    return [p for p in [*self.samples, self.mean, self.uncertainty,
                        self.mask] if p]


class _Bar:
  """The progress bar `Inpainter.inpaint` advances (tqdm's n, update and
  set_postfix_str), shown as `report(fraction, text)`: `calls` sampler
  calls of `per_call` images each."""

  def __init__(self, report, per_call: int, calls: int):
    self.n, self.total, self._report = 0, per_call * calls, report

  def update(self, images_done: int) -> None:
    self.n += images_done
    self._report(self.n / self.total, f"{self.n}/{self.total} images")

  def set_postfix_str(self, text: str) -> None:
    self._report(self.n / self.total, text)


def inpaint_request(model: Model, photo: photos_lib.Photo, name: str,
                    hole: np.ndarray, num_samples: int, num_steps: int,
                    composite: str, folder: str,
                    report=lambda fraction, text: None):
  """Inpaints `photo` (files named after `name`); yields the Files after
  the K samples, then (K > 1) with their mean, both of one draw. One
  request holds the model at a time (the compositing runs after)."""
  if hole.shape != photo.size + (1,):
    raise ValueError(f"hole of shape {hole.shape} for a photo of "
                     f"{photo.size}")
  compositing.check(composite)
  with model.lock:
    inpainter = model.with_steps(num_steps)
    drawn = inpainter.draw([photo], [hole], num_samples,
                           bar=_Bar(report, num_samples, 1))
  done, = inpainter.finish(drawn, "none", composite)
  files = Files([_save(folder, f"{name}_{k}.png", r)
                 for k, r in enumerate(done.results)],
                _save(folder, f"{name}_uncertainty.png",
                      images.uncertainty_image(done.uncertainty))
                if done.uncertainty is not None else None,
                _save(folder, f"{name}_mask.png",
                      (hole[..., 0] * 255).astype(np.uint8)))
  yield files
  if num_samples > 1:  # the same draw's mean, as --reduce=mean writes it
    mean, = inpainter.finish(drawn, "mean", composite)
    yield dataclasses.replace(files, mean=_save(
        folder, f"{name}_mean.png", mean.results[0]))


def _save(folder: str, name: str, pixels: np.ndarray) -> str:
  path = os.path.join(folder, name)
  images.save_png(path, pixels)
  return path


class Folders:
  """A temporary folder per request under one root, removed at exit; those
  older than KEEP_SECONDS go when a new one is made (Gradio serves its own
  copies of the files)."""

  def __init__(self):
    self.root = tempfile.mkdtemp(prefix="ffc_ddpm_app_")

  def new(self) -> str:
    for old in pathlib.Path(self.root).iterdir():
      if time.time() - old.stat().st_mtime > KEEP_SECONDS:
        shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(dir=self.root)

  def remove(self) -> None:
    shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------- page
INTRO = """## Inpaint a face
Upload a photo (any size), paint over what should be replaced (brush size
and eraser in the editor's tools) or choose a named mask, then **Inpaint**.
K samples are drawn; their per-pixel mean is the best estimate, and the
uncertainty map (standard deviation across the K, black outside the hole)
shows where they disagree. Known pixels are your photo's own."""


BRUSH = {"colors": [("#ffffff", 0.75)], "color_mode": "fixed"}


def _editor(photo: photos_lib.Photo | None):
  """The editor showing `photo` with no strokes, its brush's radius a
  twentieth of the photo's shorter side."""
  value = {"background": None if photo is None else photo.rgb, "layers": [],
           "composite": None}
  if photo is None:
    return gr.update(value=value)
  return gr.update(value=value, brush=gr.Brush(
      default_size=max(1, min(photo.size) // 20), **BRUSH))


def load_photo(path: str | None):
  """The upload's check (`photos_lib.read_photo`): (photo, editor, message);
  a bad file is dropped with the reader's one-line message."""
  if not path:
    return None, _editor(None), ""
  try:
    photo = photos_lib.read_photo(path)
  except (ValueError, OSError) as e:
    name = pathlib.Path(path).name
    message = " ".join(str(e).replace(path, name).split())
    return None, _editor(None), f"**error:** {message}"
  height, width = photo.size
  return (gr.update(), _editor(photo),
          f"Photo {width} x {height}: paint the hole, or choose a mask.")


def page(model: Model, folders: Folders) -> gr.Blocks:
  """The Gradio page around `model`; results go under `folders`."""
  config = model.config

  def run(path, editor, mask, num_samples, num_steps, composite,
          progress=gr.Progress()):
    try:
      if not path:
        raise ValueError("upload a photo first")
      num_samples, num_steps = check_request(model, num_samples, num_steps,
                                             composite)
      photo = photos_lib.read_photo(path)
      hole = request_hole(model, mask, (editor or {}).get("layers"),
                          *photo.size)
      request = inpaint_request(model, photo, pathlib.Path(path).stem, hole,
                                num_samples, num_steps, composite,
                                folders.new(),
                                lambda f, text: progress(f, desc=text))
      for files in request:
        done = files.mean is not None or num_samples == 1
        yield (files.samples[0], files.mean, files.uncertainty, files.samples,
               files.all(), "Done." if done else "Samples done; the mean "
               "of K is being drawn.")
    except (ValueError, OSError) as e:
      raise gr.Error(" ".join(str(e).split())) from None

  with gr.Blocks(title="ffc_ddpm inpainting", analytics_enabled=False,
                 delete_cache=(KEEP_SECONDS, KEEP_SECONDS)) as blocks:
    gr.Markdown(INTRO)
    with gr.Row():
      with gr.Column(scale=3):
        photo = gr.File(label="Photo", file_types=["image"], type="filepath",
                        elem_id="photo")
        editor = gr.ImageEditor(
            label="Paint the hole", type="numpy", image_mode="RGBA",
            sources=(), transforms=(), layers=False, format="png",
            brush=gr.Brush(**BRUSH),
            eraser=gr.Eraser(), elem_id="editor")
        clear = gr.Button("Clear the hole", elem_id="clear")
      with gr.Column(scale=2):
        mask = gr.Radio([PAINTED, *NAMED_MASKS], value=PAINTED, label="Hole",
                        elem_id="mask")
        num_samples = gr.Slider(1, MAX_K, value=DEFAULT_K, step=1,
                                label="K samples", elem_id="k")
        num_steps = gr.Slider(
            1, config.diffusion.num_steps, value=config.eval.num_steps,
            step=1, label=f"Sampler steps ({config.eval.sampler})",
            elem_id="steps")
        composite = gr.Radio(list(compositing.COMPOSITES), value="paste",
                             label="Composite", elem_id="composite")
        start = gr.Button("Inpaint", variant="primary", elem_id="run")
        status = gr.Markdown(elem_id="status")
    with gr.Row():
      shown = [gr.Image(label=label, type="filepath", format="png",
                        interactive=False, elem_id=name)
               for name, label in (("sample", "One sample"),
                                   ("mean", "Mean of K"),
                                   ("uncertainty", "Uncertainty"))]
    strip = gr.Gallery(label="The K samples", columns=8, fit_columns=False,
                       format="png", elem_id="strip")
    downloads = gr.File(label="Downloads", file_count="multiple",
                        interactive=False, elem_id="downloads")
    photo.upload(load_photo, photo, [photo, editor, status],
                 concurrency_limit=2, api_name="load_photo")
    photo.clear(load_photo, photo, [photo, editor, status],
                api_name=False)
    clear.click(load_photo, photo, [photo, editor, status], api_name=False)
    start.click(run, [photo, editor, mask, num_samples, num_steps, composite],
                [*shown, strip, downloads, status], concurrency_limit=1,
                concurrency_id="model", api_name="inpaint")
  return blocks


def launch(blocks: gr.Blocks, host: str = "127.0.0.1",
           port: int | None = None, inline: bool | None = None) -> str:
  """Serves `blocks` (one request at a time on the model, others queued)
  without blocking; returns its address. Never a public share link."""
  blocks.queue(default_concurrency_limit=1, max_size=64)
  blocks.launch(server_name=host, server_port=port, share=False,
                inline=inline, inbrowser=False, prevent_thread_lock=True,
                max_file_size=MAX_UPLOAD_BYTES, quiet=True)
  return blocks.local_url


# ------------------------------------------------------------- command
def define_flags() -> None:
  """The page's own flags beside the inpaint command's (`ffc_ddpm.main`),
  defined only when it runs as a program, so that tests and notebooks can
  import this module beside other tools' flags."""
  global _HOST, _PORT, _WARM_UP
  _HOST = flags.DEFINE_string(
      "host", "127.0.0.1", "Address to listen on; 0.0.0.0 opens the page to "
      "the network.")
  _PORT = flags.DEFINE_integer(
      "port", None, "Port (default: the first free one from 7860).")
  _WARM_UP = flags.DEFINE_bool(
      "warm_up", True, "Compile the sampler for the default K while the "
      "first photo is chosen, so that its result comes without waiting.")


def model_config():
  """The config the flags name, checked as the inpaint command checks it."""
  from ffc_ddpm import main as command  # pylint: disable=g-import-not-at-top
  values = flags.FLAGS
  extra = [f"--{f.name}" for f in values.get_flags_for_module(command)
           if f.present and f.name not in MODEL_FLAGS]
  if extra:
    raise command.UsageError(
        f"{', '.join(extra)}: the page chooses the photo, mask, K and "
        f"composite; give only --{', --'.join(MODEL_FLAGS)}, --host, --port")
  config, weights_file = values.config, values.weights
  if weights_file and values.step is not None:
    raise command.UsageError("--step: picks a checkpoint of --workdir; a "
                             "--weights file holds one step")
  if weights_file:
    config = (weights.file_config(weights_file) if config is None else
              command.config_of_weights(config, weights_file))
  elif config is None or not values.workdir:
    raise command.UsageError("--weights=FILE, or --config and --workdir: "
                             "the model to serve")
  else:
    config = command.config_of_run(config, values.workdir)
  configuration.validate(config)
  command.check_mode_settings(config, "inpaint")
  return config


def main(argv) -> None:
  from ffc_ddpm import main as command  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    command._fail(f"unexpected arguments: {' '.join(argv[1:])}")  # pylint: disable=protected-access
  values = flags.FLAGS
  try:
    config = model_config()
    import jax  # pylint: disable=g-import-not-at-top
    if values.compilation_cache:
      jax.config.update("jax_compilation_cache_dir", values.compilation_cache)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
    model = Model(inpaint.Inpainter(config, values.workdir, values.step,
                                    values.weights))
  except Exception as e:  # pylint: disable=broad-except
    command._fail(" ".join(str(e).split()))  # pylint: disable=protected-access
  folders = Folders()
  blocks = page(model, folders)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # cleans up too
  try:
    url = launch(blocks, _HOST.value, _PORT.value, inline=False)
    if _HOST.value not in ("127.0.0.1", "localhost", "::1"):
      print(f"--host={_HOST.value}: the page is open to the network")
    print(f"Inpainting page: {url} (Ctrl-C stops it)", flush=True)
    if _WARM_UP.value:
      threading.Thread(target=model.warm_up, daemon=True).start()
    blocks.block_thread()
  finally:
    blocks.close()
    folders.remove()


if __name__ == "__main__":
  from ffc_ddpm import main as command  # pylint: disable=g-import-not-at-top
  define_flags()
  absl_app.run(main, flags_parser=command.parse_flags)
