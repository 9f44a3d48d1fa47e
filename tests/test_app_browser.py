"""The page in a real browser, with the released model.

`python -m ffc_ddpm.app` serves weights/celeba64.npz on a free local port;
headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium; nothing downloaded) uploads a synthetic face, paints a stroke,
runs K = 2 and waits for the outputs. They must appear, keep every known
pixel of the upload, equal the inpaint command's files for the same photo
and mask byte for byte (`inpaint_command.inpaint_files`), and come from the page's own address only; a
screenshot of the page is written. The server runs in an empty folder with
its own HOME and temporary folder: afterwards nothing is left anywhere but
in the temporary folder.
"""

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
from PIL import Image
import pytest

from ffc_ddpm import configuration, inpaint_command, weights
from ffc_ddpm.data import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
RELEASED = ROOT / "weights" / "celeba64.npz"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
K = 2
WAIT = 240  # seconds: start-up and the first request compile the sampler

if not (CHROMIUM and DRIVER):
  if os.environ.get("CI"):
    raise RuntimeError("chromium and chromedriver are missing: run "
                       ".ci/install_app.sh")
  pytest.skip("no chromium/chromedriver (apt-get install chromium "
              "chromium-driver, or .ci/install_app.sh)",
              allow_module_level=True)
try:
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
except ImportError:
  if os.environ.get("CI"):
    raise
  pytest.skip("selenium is missing: pip install -e '.[app]'",
              allow_module_level=True)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serving(root: pathlib.Path):
  """(address, folders): the app as users start it, in an empty folder,
  with HOME and the temporary folders inside `root`; after it stops, its
  temporary folder is gone."""
  folders = {name: root / name for name in ("cwd", "home", "tmp", "cache")}
  for folder in folders.values():
    folder.mkdir(parents=True)
  # Gradio's event handler imports matplotlib, whose font cache would go
  # to HOME: MPLCONFIGDIR puts that library cache with the temporary files.
  env = dict(os.environ, HOME=str(folders["home"]), TMPDIR=str(folders["tmp"]),
             GRADIO_TEMP_DIR=str(folders["tmp"] / "gradio"),
             MPLCONFIGDIR=str(folders["tmp"] / "matplotlib"))
  process = subprocess.Popen(
      [sys.executable, "-m", "ffc_ddpm.app", f"--weights={RELEASED}",
       f"--port={free_port()}", "--nowarm_up",
       f"--compilation_cache={folders['cache']}"],
      cwd=folders["cwd"], env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  try:
    url, seen, deadline = None, [], time.time() + WAIT
    while url is None and time.time() < deadline:
      line = process.stdout.readline()
      if not line and process.poll() is not None:
        break
      seen.append(line)
      if line.startswith("Inpainting page: "):
        url = line.split()[2]
    assert url, "the app did not start:\n" + "".join(seen[-30:])
    yield url, folders
  finally:
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=180)  # a loaded CI machine is slow to stop
  assert process.returncode == 0
  assert not list(folders["tmp"].glob("ffc_ddpm_app_*"))  # removed at exit


@contextlib.contextmanager
def chromium():
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1400,1800"):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER),
                            options=options)
  try:
    yield driver
  finally:
    driver.quit()


def toasts(browser) -> list[str]:
  return [e.text for e in browser.find_elements(By.CSS_SELECTOR,
                                                ".toast-body")]


def paint_and_run(browser, url: str, upload: pathlib.Path, folder):
  """Uploads, paints a stroke across the middle, runs K = 2; returns the
  bytes of every download and of the shown images, how many images the
  strip shows, and every address the page fetched."""
  browser.get(url)
  wait = WebDriverWait(browser, WAIT)
  wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                       "#photo input[type=file]"))
  browser.find_element(By.CSS_SELECTOR,
                       "#photo input[type=file]").send_keys(str(upload))
  status = lambda d: d.find_element(By.ID, "status").text
  wait.until(lambda d: status(d).startswith("Photo 88 x 96"))
  canvas = browser.find_elements(By.CSS_SELECTOR, "#editor canvas")[-1]
  stroke = ActionChains(browser).move_to_element_with_offset(canvas, -30, 0)
  stroke = stroke.click_and_hold()
  for _ in range(6):
    stroke = stroke.move_by_offset(10, 1)
  stroke.release().perform()
  k = browser.find_element(By.CSS_SELECTOR, "#k input[type=number]")
  k.clear()
  k.send_keys(str(K), "\t")
  browser.find_element(By.ID, "run").click()
  wait.until(lambda d: status(d) == "Done." or toasts(d))
  assert status(browser) == "Done.", toasts(browser)
  browser.save_screenshot(str(folder / "page.png"))
  fetch = lambda src: urllib.request.urlopen(src, timeout=60).read()
  links = [a.get_attribute("href")
           for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")]
  shown = {name: fetch(browser.find_element(
      By.CSS_SELECTOR, f"#{name} img").get_attribute("src"))
           for name in ("sample", "mean", "uncertainty")}
  return dict(downloads={link.rsplit("/", 1)[1]: fetch(link)
                         for link in links}, shown=shown,
              strip=len(browser.find_elements(By.CSS_SELECTOR, "#strip img")),
              requested=browser.execute_script(
                  "return performance.getEntriesByType('resource')"
                  ".map(e => e.name)"))


def check_outputs(got, pixels: np.ndarray, folder: pathlib.Path) -> None:
  """Every output is there, shown and downloadable; the stroke is the hole
  and every known pixel is the upload's."""
  downloads = got["downloads"]
  assert sorted(downloads) == ["face_0.png", "face_1.png", "face_mask.png",
                               "face_mean.png", "face_uncertainty.png"]
  assert got["shown"] == {"sample": downloads["face_0.png"],
                          "mean": downloads["face_mean.png"],
                          "uncertainty": downloads["face_uncertainty.png"]}
  assert got["strip"] == K
  for name, data in downloads.items():
    (folder / name).write_bytes(data)
  read = lambda name: np.asarray(Image.open(folder / name))
  hole = read("face_mask.png") > 0
  rows, cols = np.nonzero(hole)
  assert 0.005 < hole.mean() < 0.5  # the stroke, across the middle
  assert rows.min() < 48 < rows.max() and cols.min() < 44 < cols.max()
  for name in ("face_0.png", "face_1.png", "face_mean.png"):
    result = read(name)
    assert result.shape == pixels.shape
    np.testing.assert_array_equal(result[~hole], pixels[~hole])
    assert (result[hole] != pixels[hole]).any(-1).mean() > 0.5
  assert Image.open(folder / "page.png").size[0] >= 1000  # the screenshot


def check_equal_to_the_command(downloads, upload: pathlib.Path,
                               folder: pathlib.Path) -> None:
  """The inpaint command's function (`inpaint_files`, with the config
  that `--config=configs/celeba64.py --weights=...` gives) on the same
  photo and the page's mask file: the samples and the uncertainty map
  (reduce "none") and the mean (reduce "mean"), byte for byte."""
  config = weights.file_config(str(RELEASED), configuration.load_config(
      str(ROOT / "configs" / "celeba64.py")))
  written = {}
  for reduce in ("none", "mean"):
    for path in inpaint_command.inpaint_files(
        config, None, str(upload), str(folder / "face_mask.png"),
        str(folder / "command" / reduce / "x.png"), K, reduce=reduce,
        weights_file=str(RELEASED)):
      written[f"{reduce}/{pathlib.Path(path).name}"] = pathlib.Path(
          path).read_bytes()
  assert sorted(written) == ["mean/x.png", "mean/x_uncertainty.png",
                             "none/x_0.png", "none/x_1.png",
                             "none/x_uncertainty.png"]
  for ours, theirs in (("face_0.png", "none/x_0.png"),
                       ("face_1.png", "none/x_1.png"),
                       ("face_uncertainty.png", "none/x_uncertainty.png"),
                       ("face_mean.png", "mean/x.png")):
    assert downloads[ours] == written[theirs], ours


def check_clear(browser) -> None:
  """*Clear the hole* removes the strokes: inpainting then gets one
  message, and nothing runs."""
  browser.find_element(By.ID, "clear").click()
  time.sleep(1)
  browser.find_element(By.ID, "run").click()
  WebDriverWait(browser, 60).until(toasts)
  assert "the hole is empty: paint over what should be replaced" in (
      toasts(browser)[0])


def test_a_face_is_uploaded_painted_and_inpainted_in_chromium(tmp_path):
  """One server and one browser (a single test, so that test workers do
  not start one each)."""
  pixels = synthetic.render_face(0, 7, 96)[:, 4:92]  # 96 x 88
  upload = tmp_path / "face.png"
  Image.fromarray(pixels).save(upload)
  with serving(tmp_path / "app") as (url, folders), chromium() as browser:
    got = paint_and_run(browser, url, upload, tmp_path)
    check_outputs(got, pixels, tmp_path)
    assert got["requested"] and all(
        name.startswith(url) for name in got["requested"]), [
            n for n in got["requested"] if not n.startswith(url)][:5]
    assert not list(folders["cwd"].iterdir())
    assert not list(folders["home"].rglob("*"))
    check_clear(browser)
  check_equal_to_the_command(got["downloads"], upload, tmp_path)
