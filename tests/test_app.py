"""The inpainting page without a browser: its functions, and its server.

A tiny random model (configs/test.py) is served in this process; Gradio's
own client sends what the page sends. The promise: the page writes the
same files as the inpaint command (`inpaint_command.inpaint_files`) for the same
photo, mask, K and seed; two requests at once each get their own; bad and
oversized uploads get one message and the server goes on.
"""

import concurrent.futures
import importlib
import os
import pathlib
import socket
import struct
import subprocess
import sys
import time
import types
import zlib

import numpy as np
from PIL import Image
import pytest

import inference_helpers as helpers
from ffc_ddpm import configuration, inpaint, inpaint_command, weights
from ffc_ddpm import photos as photos_lib
from ffc_ddpm.data import synthetic


def require(module: str):
  """`module`, or (outside CI) a skip naming the extra that brings it."""
  try:
    return importlib.import_module(module)
  except ImportError:
    if os.environ.get("CI"):
      raise
    pytest.skip(f"{module} is missing: pip install -e '.[app]'",
                allow_module_level=True)


gradio_client = require("gradio_client")
httpx = require("httpx")
app = require("ffc_ddpm.app")

K = 2


def face(index: int, height: int, width: int) -> np.ndarray:
  """A synthetic face cropped to (height, width), uint8 RGB."""
  side = max(height, width)
  return synthetic.render_face(0, index, side)[:height, :width]


def rectangle(height, width, top, left, h, w) -> np.ndarray:
  hole = np.zeros((height, width, 1), np.float32)
  hole[top:top + h, left:left + w] = 1
  return hole


def save(path: pathlib.Path, pixels: np.ndarray) -> str:
  Image.fromarray(pixels).save(path)
  return str(path)


def huge_png(path: pathlib.Path, side: int) -> str:
  """A valid 1-bit black PNG of side x side pixels, written without
  holding it in memory (a few hundred kB for 30,000)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(
        ">I", zlib.crc32(body))
  packer, row = zlib.compressobj(9), bytes(1 + -(-side // 8))
  data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
  path.write_bytes(b"\x89PNG\r\n\x1a\n" +
                   chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0,
                                              0, 0, 0)) +
                   chunk(b"IDAT", data) + chunk(b"IEND", b""))
  return str(path)


# ------------------------------------------------------------ the hole
def test_the_painted_hole_is_every_touched_pixel_of_every_layer():
  alpha = np.zeros((6, 8), np.uint8)
  alpha[1:3, 2:5], alpha[5, 7] = 255, 1  # a stroke, one faint edge pixel
  other = np.zeros((6, 8), np.uint8)
  other[4, 0] = 200
  layers = [np.dstack([np.full((6, 8, 3), 255, np.uint8), a])
            for a in (alpha, other)]
  hole = app.painted_hole(layers, 6, 8)
  assert hole.shape == (6, 8, 1) and hole.dtype == np.float32
  np.testing.assert_array_equal(hole[..., 0], (alpha > 0) | (other > 0))
  assert not app.painted_hole([], 6, 8).any()


def test_a_layer_of_another_size_is_resized_to_the_photo():
  small = np.zeros((3, 4), bool)
  small[1, 2] = small[0, 0] = True
  big = np.repeat(np.repeat(small, 2, 0), 2, 1).astype(np.uint8) * 255
  layer = np.dstack([np.zeros((6, 8, 3), np.uint8), big])
  np.testing.assert_array_equal(app.painted_hole([layer], 3, 4)[..., 0],
                                small)


def test_a_named_mask_is_the_commands_mask_for_its_first_image():
  """The centre mask at the model's 16: rows and columns 4..12, stretched
  to a 32 x 48 photo: rows 8..24, columns 12..36."""
  model = types.SimpleNamespace(config=helpers.tiny_config())
  hole = app.request_hole(model, "center", None, 32, 48)
  np.testing.assert_array_equal(hole, rectangle(32, 48, 8, 12, 16, 24))


@pytest.mark.parametrize("mask,layers,needle", [
    ("painted", [], "the hole is empty: paint over"),
    ("oval", None, "mask='oval': expected painted or one of center, random"),
])
def test_a_request_without_a_hole_is_refused(mask, layers, needle):
  model = types.SimpleNamespace(config=helpers.tiny_config())
  with pytest.raises(ValueError, match=needle):
    app.request_hole(model, mask, layers, 8, 8)


@pytest.mark.parametrize("k,steps,composite,needle", [
    (0, 4, "paste", "K=0: expected an integer from 1 to 16"),
    (17, 4, "paste", "K=17"),
    (2.5, 4, "paste", "K=2.5"),
    (2, 101, "paste", "steps=101: expected an integer from 1 to 100"),
    (2, 4, "blend", "blend"),
])
def test_bad_settings_are_refused_naming_the_field(k, steps, composite,
                                                   needle):
  model = types.SimpleNamespace(config=helpers.tiny_config())
  with pytest.raises(ValueError, match=needle):
    app.check_request(model, k, steps, composite)
  assert app.check_request(model, 3.0, 7, "poisson") == (3, 7)


# ------------------------------------------------------------ uploads
def test_an_upload_is_read_as_the_command_reads_it(tmp_path):
  pixels = face(1, 20, 28)
  _, editor, message = app.load_photo(save(tmp_path / "me.png", pixels))
  np.testing.assert_array_equal(editor["value"]["background"], pixels)
  assert editor["value"]["layers"] == []
  assert editor["brush"].default_size == 1  # a twentieth of 20 pixels
  assert message.startswith("Photo 28 x 20")


def test_a_bad_file_gets_one_line_naming_it(tmp_path):
  path = tmp_path / "notes.png"
  path.write_text("not a picture")
  photo, editor, message = app.load_photo(str(path))
  assert photo is None and editor["value"]["background"] is None
  assert message == ("**error:** notes.png: not an image (Pillow knows no "
                     "format of its contents)")


def test_a_30000_pixel_square_png_is_refused_before_decoding(tmp_path):
  path = huge_png(tmp_path / "huge.png", 30_000)
  assert os.path.getsize(path) < 2**20
  start = time.perf_counter()
  photo, _, message = app.load_photo(path)
  assert time.perf_counter() - start < 5  # not decoded: 900 MP
  assert photo is None
  assert message.startswith("**error:** huge.png: ")
  assert "900000000 pixels" in message or "30000x30000" in message


# -------------------------------------------------------- with a model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(Model, workdir): a random tiny checkpoint, loaded once as the page
  loads its model."""
  config = helpers.tiny_config()
  workdir = str(helpers.random_checkpoint(config,
                                          tmp_path_factory.mktemp("tiny")))
  return app.Model(inpaint.Inpainter(config, workdir)), workdir


def command_files(tiny, photo: str, mask: str, out: pathlib.Path,
                  composite: str = "paste") -> dict:
  """The bytes of what the inpaint command writes for `photo` and the mask
  file `mask` with K samples: {"samples": [K], "uncertainty", "mean"}."""
  model, workdir = tiny
  files = {}
  for reduce in ("none", "mean"):
    paths = inpaint_command.inpaint_files(model.config, workdir, photo, mask,
                                  str(out / reduce / "x.png"), K,
                                  reduce=reduce, composite=composite)
    files[reduce] = [pathlib.Path(p).read_bytes() for p in paths]
  return {"samples": files["none"][:K], "uncertainty": files["none"][K],
          "mean": files["mean"][0]}


def page_files(files: "app.Files") -> dict:
  read = lambda p: pathlib.Path(p).read_bytes()
  return {"samples": [read(p) for p in files.samples],
          "uncertainty": read(files.uncertainty), "mean": read(files.mean)}


@pytest.mark.parametrize("composite", ["paste", "poisson"])
def test_the_page_writes_the_commands_files_byte_for_byte(tiny, tmp_path,
                                                          composite):
  model, _ = tiny
  pixels = face(2, 24, 20)
  path = save(tmp_path / "me.png", pixels)
  hole = rectangle(24, 20, 6, 3, 9, 12)
  folder = tmp_path / "page"
  folder.mkdir()
  steps = list(app.inpaint_request(
      model, photos_lib.read_photo(path), "me", hole, K,
      model.config.eval.num_steps, composite, str(folder)))
  assert len(steps) == 2 and steps[0].mean is None  # samples come first
  files = steps[1]
  assert [pathlib.Path(p).name for p in files.all()] == [
      "me_0.png", "me_1.png", "me_mean.png", "me_uncertainty.png",
      "me_mask.png"]
  mask = np.asarray(Image.open(files.mask))
  np.testing.assert_array_equal(mask, hole[..., 0] * 255)
  assert page_files(files) == command_files(tiny, path, files.mask,
                                            tmp_path / "command", composite)
  for sample in [*files.samples, files.mean]:
    result = np.asarray(Image.open(sample))
    np.testing.assert_array_equal(result[mask == 0], pixels[mask == 0])
    assert (result[mask > 0] != pixels[mask > 0]).any()


def test_another_step_count_is_another_sampler_on_the_same_weights(
    tiny, tmp_path):
  model, _ = tiny
  default = model.config.eval.num_steps
  assert model.with_steps(default) is model.inpainter
  fewer = model.with_steps(default // 2)
  assert fewer.loaded.params is model.inpainter.loaded.params
  assert fewer.loaded.sampler.total_steps == default // 2
  assert model.inpainter.loaded.sampler.total_steps == default
  assert model.config.eval.num_steps == default
  photo = photos_lib.photo_from_array(face(3, 16, 16))
  hole = rectangle(16, 16, 4, 4, 8, 8)
  runs = [list(app.inpaint_request(model, photo, "x", hole, K, steps,
                                   "paste", str(tmp_path / str(steps))))
          for steps in (default, default // 2)]
  first, second = (np.asarray(Image.open(r[-1].samples[0])) for r in runs)
  assert (first != second).any()


# ------------------------------------------------------------ the server
def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny):
  """(address, Model): the page on a free local port, in this process."""
  model, _ = tiny
  folders = app.Folders()
  blocks = app.page(model, folders)
  url = app.launch(blocks, port=free_port())
  yield url, model
  blocks.close()
  folders.remove()
  assert not os.path.exists(folders.root)


def client(url, folder):
  return gradio_client.Client(url, verbose=False, download_files=str(folder))


def test_it_listens_on_the_loopback_address_only(served):
  url, _ = served
  assert url.startswith("http://127.0.0.1:")


def test_two_requests_at_once_each_get_their_own_result(served, tiny,
                                                        tmp_path,
                                                        monkeypatch):
  """A painted hole on one photo, the centre mask on another, sent
  together: each result is the command's for its own photo and mask, and
  the model ran them one after the other."""
  url, model = served
  calls = []
  draw_once = model.inpainter.draw

  def recorded(*args, **kwargs):
    start = time.perf_counter()
    try:
      return draw_once(*args, **kwargs)
    finally:
      calls.append((start, time.perf_counter()))

  monkeypatch.setattr(model.inpainter, "draw", recorded)
  painted = np.zeros((20, 28, 4), np.uint8)
  painted[5:14, 8:20] = 255
  photos = [save(tmp_path / "a.png", face(4, 20, 28)),
            save(tmp_path / "b.png", face(5, 26, 18))]
  editors = [{"background": None, "composite": None,
              "layers": [gradio_client.handle_file(
                  save(tmp_path / "layer.png", painted))]}, None]
  masks = ["painted", "center"]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    jobs = [pool.submit(client(url, tmp_path / f"got{i}").predict,
                        gradio_client.handle_file(photos[i]), editors[i],
                        masks[i], K, model.config.eval.num_steps, "paste",
                        api_name="/inpaint") for i in range(2)]
    results = [job.result(timeout=300) for job in jobs]
  calls.sort()
  assert len(calls) == 2 and all(
      end <= start for (_, end), (start, _) in zip(calls, calls[1:]))
  for i, (_, mean, uncertainty, strip, downloads, status) in enumerate(
      results):
    assert status == "Done."
    assert len(strip) == K and len(downloads) == 2 * K + 1
    mask = downloads[-1]
    got = {"samples": [pathlib.Path(d).read_bytes() for d in downloads[:K]],
           "uncertainty": pathlib.Path(uncertainty).read_bytes(),
           "mean": pathlib.Path(mean).read_bytes()}
    assert got == command_files(tiny, photos[i], mask, tmp_path / f"cmd{i}")
  hole = np.asarray(Image.open(results[0][4][-1])) > 0
  np.testing.assert_array_equal(hole, painted[..., 3] > 0)


def test_a_huge_png_is_refused_and_the_server_goes_on(served, tmp_path):
  url, model = served
  talk = client(url, tmp_path)
  photo, _, message = talk.predict(
      gradio_client.handle_file(huge_png(tmp_path / "huge.png", 30_000)),
      api_name="/load_photo")
  assert photo is None and message.startswith("**error:** huge.png: ")
  good = save(tmp_path / "ok.png", face(6, 16, 16))
  _, _, message = talk.predict(gradio_client.handle_file(good),
                               api_name="/load_photo")
  assert message.startswith("Photo 16 x 16")
  result = talk.predict(gradio_client.handle_file(good), None, "center", K,
                        model.config.eval.num_steps, "paste",
                        api_name="/inpaint")
  assert result[-1] == "Done."


def test_an_upload_over_the_byte_limit_is_refused(served):
  url, _ = served
  big = bytes(app.MAX_UPLOAD_BYTES + 1)
  response = httpx.post(f"{url}gradio_api/upload",
                        files={"files": ("big.png", big)}, timeout=60)
  assert response.status_code == 413, response.text[:200]
  assert httpx.get(url, timeout=60).status_code == 200


def test_a_request_without_a_photo_gets_one_message(served, tmp_path):
  url, _ = served
  with pytest.raises(Exception, match="upload a photo first"):
    client(url, tmp_path).predict(None, None, "center", 1, 4, "paste",
                                  api_name="/inpaint")


# ----------------------------------------------------------- the command
@pytest.mark.parametrize("argv,needle", [
    (["--weights=weights/celeba64.npz", "--mode=train", "--num_samples=4"],
     "--mode, --num_samples: the page chooses the photo, mask, K and "
     "composite; give only --config, --workdir, --weights, --step, "
     "--compilation_cache, --host, --port"),
    (["--weights=weights/celeba64.npz", "--step=3"],
     "--step: picks a checkpoint of --workdir"),
    (["--config=configs/test.py"],
     "--weights=FILE, or --config and --workdir: the model to serve"),
])
def test_flags_that_name_no_model_or_set_what_the_page_sets_are_refused(
    argv, needle):
  """In a process of its own, as users run it (the command's absl flags
  would meet other tools' in this one)."""
  result = subprocess.run(
      [sys.executable, "-m", "ffc_ddpm.app", *argv], cwd=helpers.ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
      text=True, timeout=300)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and needle in last, result.stderr[-2000:]


def test_without_a_config_a_weights_file_brings_its_own(monkeypatch):
  """The released file's own config: its network, and the sampler, steps
  and seed of configs/celeba64.py, which it was trained and scored with."""
  monkeypatch.chdir(helpers.ROOT)
  config = weights.file_config("weights/celeba64.npz")
  released = configuration.load_config("configs/celeba64.py")
  for field in ("model", "diffusion"):
    assert config[field].to_dict() == released[field].to_dict()
  for field in ("sampler", "num_steps", "batch_size", "timestep_spacing"):
    assert config.eval[field] == released.eval[field]
  assert config.seed == released.seed
  assert config.data.image_size == 64
