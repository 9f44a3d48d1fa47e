"""The Colab notebook runs end to end (outside Colab), so it cannot rot.

Its parameters cell is replaced by the tiny test config and a copy of the
shared trained workdir: the notebook continues that run
(nothing left to train), inpaints a synthetic face in a rectangle hole, and
shows the grids. Then again from that run's exported weights (`WEIGHTS`),
in an empty workdir. Every other cell runs as users run it.
"""

import ast
import shutil
import sys

import nbclient
import nbformat
import numpy as np
from PIL import Image
import pytest

from ffc_ddpm import compositing
import inference_helpers as helpers

sys.path.insert(0, str(helpers.ROOT / "tools"))
import export_weights  # pylint: disable=g-import-not-at-top,wrong-import-position

NOTEBOOK = helpers.ROOT / "notebooks" / "ffc_ddpm_colab.ipynb"
PARAMETERS = ("REPO_URL", "CONFIG", "TRAIN_STEPS", "WORKDIR", "WEIGHTS",
              "MASK", "RECTANGLES", "NUM_SAMPLES", "COMPOSITE", "EVAL_IMAGES")
NUM_SAMPLES = 2


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  return helpers.trained_workdir(tmp_path_factory)


def assigned_names(source: str) -> tuple[str, ...]:
  return tuple(node.targets[0].id for node in ast.parse(source).body
               if isinstance(node, ast.Assign))


def parameters_cell(notebook):
  """The first code cell, tagged `parameters` (Colab's form)."""
  cell = [c for c in notebook.cells if c.cell_type == "code"][0]
  assert "parameters" in cell.metadata.get("tags", [])
  assert assigned_names(cell.source) == PARAMETERS
  return cell


def run_notebook(folder, workdir, weights_file=""):
  """Runs every cell but the parameters, which are the tiny test config,
  `workdir` and `weights_file`; returns (code cells, outputs folder)."""
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  parameters = parameters_cell(notebook)
  parameters.source = "\n".join([
      'REPO_URL = ""',
      f"CONFIG = {str(helpers.ROOT / 'configs' / 'test.py')!r}",
      "TRAIN_STEPS = 4",
      f"WORKDIR = {str(workdir)!r}",
      f"WEIGHTS = {str(weights_file)!r}",
      'MASK = "draw"  # outside Colab: the rectangles',
      'RECTANGLES = "0.25,0.25,0.5,0.5"',
      f"NUM_SAMPLES = {NUM_SAMPLES}",
      'COMPOSITE = "paste"',
      "EVAL_IMAGES = 0"])
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": str(folder)}}).execute()
  return code, workdir / "notebook"


def test_out_of_the_box_it_inpaints_with_the_released_model():
  """The default parameters name the committed weights and their config,
  so a user who runs every cell gets the real-face model, no training."""
  defaults = {}
  exec(parameters_cell(nbformat.read(NOTEBOOK, as_version=4)).source, {},
       defaults)  # pylint: disable=exec-used
  assert (helpers.ROOT / defaults["CONFIG"]).is_file()
  assert (helpers.ROOT / defaults["WEIGHTS"]).is_file()
  assert defaults["COMPOSITE"] in compositing.COMPOSITES


def shown_images(code) -> int:
  return len([o for c in code for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})])


def read_results(out):
  return [np.asarray(Image.open(out / f"result_{k}.png"))
          for k in range(NUM_SAMPLES)]


@pytest.fixture(scope="module")
def from_workdir(trained, tmp_path_factory):
  """The notebook continuing the shared trained run (nothing to train)."""
  folder = tmp_path_factory.mktemp("notebook")
  workdir = folder / "work"
  shutil.copytree(trained, workdir)  # checkpoints and training grids
  return run_notebook(folder, workdir)


def test_notebook_runs_and_keeps_the_known_pixels(from_workdir):
  code, out = from_workdir
  assert shown_images(code) == 4  # training grid, photo, masked photo, results
  photo = np.asarray(Image.open(out / "photo.png"))
  hole = np.asarray(Image.open(out / "mask.png")) == 255
  height, width = photo.shape[:2]
  expected = np.zeros((height, width), bool)
  expected[round(0.25 * height):round(0.75 * height),
           round(0.25 * width):round(0.75 * width)] = True
  np.testing.assert_array_equal(hole, expected)
  results = read_results(out)
  for result in results:
    np.testing.assert_array_equal(result[~hole], photo[~hole])
    assert (result[hole] != photo[hole]).any(-1).mean() > 0.9
  assert (results[0] != results[1]).any()


def test_with_weights_it_trains_nothing_and_inpaints_as_the_workdir(
    from_workdir, trained, tmp_path):
  """WEIGHTS = the trained run's exported EMA weights, in an empty workdir:
  no checkpoint is written and the fills equal the workdir's."""
  export_weights.export(str(trained), str(tmp_path / "tiny.npz"))
  workdir = tmp_path / "work"
  code, out = run_notebook(tmp_path, workdir, tmp_path / "tiny.npz")
  assert not (workdir / "checkpoints").exists()
  assert shown_images(code) == 3  # photo, masked photo, results
  for ours, theirs in zip(read_results(out), read_results(from_workdir[1])):
    np.testing.assert_array_equal(ours, theirs)
