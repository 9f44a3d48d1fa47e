"""Checkpoints for the evaluation, inpainting and notebook tests.

`trained_workdir` trains configs/test.py once per test session (the tests of
several modules share it); `random_checkpoint` writes freshly drawn weights
the way a converted guided-diffusion checkpoint is stored (params only),
with no compilation.
"""

import functools
import pathlib
import shutil

import jax
import numpy as np

from ffc_ddpm import checkpoint, configuration, images, models, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config():
  return configuration.load_config(str(ROOT / "configs" / "test.py"))


@functools.cache
def _train_once(workdir: str) -> str:
  train.train(tiny_config(), workdir)
  return workdir


def trained_workdir(tmp_path_factory) -> pathlib.Path:
  """A workdir holding configs/test.py trained for its 4 steps (shared)."""
  root = tmp_path_factory.getbasetemp() / "trained_test_config"
  return pathlib.Path(_train_once(str(root)))


def copy_checkpoints(workdir: pathlib.Path, target: pathlib.Path):
  """A fresh workdir with the checkpoints of `workdir` (and nothing else)."""
  shutil.copytree(workdir / "checkpoints", target / "checkpoints")
  return target


def random_checkpoint(config, workdir: pathlib.Path, seed: int = 0,
                      step: int = 0) -> pathlib.Path:
  """Saves random weights for `config.model` as `params` at `step`."""
  model = models.create_model(config.model)
  shapes = jax.eval_shape(
      lambda: models.init_params(model, config.model, jax.random.key(0)))
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda s: (rng.normal(size=s.shape) * 0.05).astype(np.float32), shapes)
  ckpt = checkpoint.Checkpointer(str(workdir))
  ckpt.save(step, {"params": params}, {"step": step})
  ckpt.wait()
  ckpt.close()
  return workdir


def grid_cell(grid: np.ndarray, row: int, column: int, size: int,
              pad: int = 2) -> np.ndarray:
  """Cell (row, column) of an images.inpainting_grid of size x size images,
  at the images' size: the grid shows them enlarged s times, each pixel an
  s x s block (checked here)."""
  scale = images.grid_scale(size)
  cell = size * scale
  top, left = pad + row * (cell + pad), pad + column * (cell + pad)
  block = grid[top:top + cell, left:left + cell]
  image = block[::scale, ::scale]
  np.testing.assert_array_equal(block, image.repeat(scale, 0).repeat(scale,
                                                                     1))
  return image
