"""The Colab notebook runs end to end (outside Colab), so it cannot rot.

Its parameters cell is replaced by the tiny test config and a copy of the
shared trained workdir: the notebook continues that run
(nothing left to train), inpaints a synthetic face in a rectangle hole, and
shows the grids. Every other cell runs as users run it.
"""

import ast
import shutil

import nbclient
import nbformat
import numpy as np
from PIL import Image
import pytest

import inference_helpers as helpers

NOTEBOOK = helpers.ROOT / "notebooks" / "ffc_ddpm_colab.ipynb"
PARAMETERS = ("REPO_URL", "CONFIG", "TRAIN_STEPS", "WORKDIR", "MASK",
              "RECTANGLES", "NUM_SAMPLES", "EVAL_IMAGES")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  return helpers.trained_workdir(tmp_path_factory)


def assigned_names(source: str) -> tuple[str, ...]:
  return tuple(node.targets[0].id for node in ast.parse(source).body
               if isinstance(node, ast.Assign))


def test_notebook_runs_and_keeps_the_known_pixels(trained, tmp_path):
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  parameters = code[0]
  assert "parameters" in parameters.metadata.get("tags", [])
  assert assigned_names(parameters.source) == PARAMETERS
  workdir = tmp_path / "work"
  shutil.copytree(trained, workdir)  # checkpoints and training grids
  parameters.source = "\n".join([
      'REPO_URL = ""',
      f"CONFIG = {str(helpers.ROOT / 'configs' / 'test.py')!r}",
      "TRAIN_STEPS = 4",
      f"WORKDIR = {str(workdir)!r}",
      'MASK = "draw"  # outside Colab: the rectangles',
      'RECTANGLES = "0.25,0.25,0.5,0.5"',
      "NUM_SAMPLES = 2",
      "EVAL_IMAGES = 0"])
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": str(tmp_path)}}).execute()

  shown = [o for c in code for o in c.get("outputs", [])
           if "image/png" in o.get("data", {})]
  assert len(shown) == 4  # training grid, photo, masked photo, results
  out = workdir / "notebook"
  photo = np.asarray(Image.open(out / "photo.png"))
  hole = np.asarray(Image.open(out / "mask.png")) == 255
  height, width = photo.shape[:2]
  expected = np.zeros((height, width), bool)
  expected[round(0.25 * height):round(0.75 * height),
           round(0.25 * width):round(0.75 * width)] = True
  np.testing.assert_array_equal(hole, expected)
  results = [np.asarray(Image.open(out / f"result_{k}.png")) for k in (0, 1)]
  for result in results:
    np.testing.assert_array_equal(result[~hole], photo[~hole])
    assert (result[hole] != photo[hole]).any(-1).mean() > 0.9
  assert (results[0] != results[1]).any()
