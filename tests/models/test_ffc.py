"""FFC layers: the Fourier unit against numpy's FFT; global receptive field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_reference
from model_helpers import fast_jit, random_params
from ffc_ddpm.models import ffc


def numpy_fourier_unit(x, params):
  """LaMa's FourierUnit with GroupNorm, in float64 numpy."""
  n, h, w, c = x.shape
  spectrum = np.fft.rfft2(x.astype(np.float64), axes=(1, 2), norm="ortho")
  z = np.stack([spectrum.real, spectrum.imag], axis=-1)  # re/im interleaved
  z = z.reshape(n, h, w // 2 + 1, 2 * c) @ np.asarray(params["conv"]["kernel"])
  groups = ffc.num_groups(z.shape[-1])
  g = z.reshape(n, -1, groups, z.shape[-1] // groups)
  g = (g - g.mean(axis=(1, 3), keepdims=True)) / np.sqrt(
      g.var(axis=(1, 3), keepdims=True) + 1e-5)
  z = g.reshape(z.shape) * params["norm"]["scale"] + params["norm"]["bias"]
  z = np.maximum(z, 0).reshape(n, h, w // 2 + 1, -1, 2)
  return np.fft.irfft2(z[..., 0] + 1j * z[..., 1], s=(h, w), axes=(1, 2),
                       norm="ortho")


@pytest.mark.parametrize("height, width", [(8, 8), (6, 10)])
def test_fourier_unit_matches_numpy_fft(height, width):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, height, width, 12)).astype(np.float32)
  unit = ffc.FourierUnit(12)
  params = random_params(jax.eval_shape(unit.init, jax.random.key(0), x)[
      "params"], seed=1)
  got = fast_jit(unit.apply)({"params": params}, x)
  assert got.shape == x.shape
  np.testing.assert_allclose(got, numpy_fourier_unit(x, params), atol=1e-5)


def test_num_groups_is_32_or_the_largest_divisor_below():
  assert [ffc.num_groups(c) for c in (32, 96, 192, 48, 24, 12, 7)] == [
      32, 32, 32, 24, 24, 12, 7]


def corner_gradient(layer, params, x):
  """|d out[0, 0, 0, :] / d x[0, -1, -1, c]|, summed over outputs, per c."""
  grad = jax.grad(
      lambda v: layer.apply({"params": params}, v)[0, 0, 0].sum())
  return np.abs(np.asarray(fast_jit(grad)(x))[0, -1, -1])


def test_one_ffc_layer_sees_the_whole_image():
  """The far corner reaches pixel (0, 0) through the global channels only."""
  x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 16, 16, 32)),
                  jnp.float32)
  layer = ffc.FFC(32, ratio_gin=0.75, ratio_gout=0.75)
  params = random_params(jax.eval_shape(layer.init, jax.random.key(0), x)[
      "params"], seed=3)
  gradient = corner_gradient(layer, params, x)
  assert (gradient[8:] > 1e-6).all()  # the global channels
  assert (gradient[:8] == 0).all()  # the local ones
  local = ffc.FFC(32, ratio_gin=0.0, ratio_gout=0.0)  # a plain 3x3 conv
  params = random_params(jax.eval_shape(local.init, jax.random.key(0), x)[
      "params"], seed=3)
  assert (corner_gradient(local, params, x) == 0).all()


def test_ratio_zero_is_a_reflect_padded_conv():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((1, 5, 6, 8)).astype(np.float32)
  w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32) / 9
  layer = ffc.FFC(16, ratio_gin=0.0, ratio_gout=0.0)
  got = fast_jit(layer.apply)({"params": {"l2l": {"kernel": w}}}, x)
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  expected = gd_reference.conv2d(
      padded.transpose(0, 3, 1, 2).astype(np.float64),
      w.transpose(3, 2, 0, 1), np.zeros(16))[:, :, 1:-1, 1:-1]
  np.testing.assert_allclose(got, expected.transpose(0, 2, 3, 1), atol=1e-5)


@pytest.mark.parametrize("ratio_gin, ratio_gout, paths", [
    (0.75, 0.75, {"l2l", "g2l", "l2g", "g2g"}),
    (0.0, 0.75, {"l2l", "l2g"}),
    (1.0, 1.0, {"g2g"}),
    (0.5, 0.0, {"l2l", "g2l"}),
])
def test_paths_follow_the_split(ratio_gin, ratio_gout, paths):
  x = jnp.zeros((1, 8, 8, 32))
  layer = ffc.FFC(16, ratio_gin=ratio_gin, ratio_gout=ratio_gout)
  shapes = jax.eval_shape(layer.init, jax.random.key(0), x)["params"]
  assert set(shapes) == paths
  out_global = int(16 * ratio_gout)
  if "g2g" in paths:
    assert shapes["g2g"]["conv2"]["kernel"].shape == (out_global // 2,
                                                      out_global)
  assert jax.eval_shape(layer.apply, {"params": shapes}, x).shape == (
      1, 8, 8, 16)


def test_local_fourier_unit_tiles_quadrants():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  tiles = np.asarray(ffc.quadrants_to_channels(jnp.asarray(x)))
  expected = np.concatenate([x[:, :2, :3], x[:, 2:, :3], x[:, :2, 3:],
                             x[:, 2:, 3:]], axis=-1)
  np.testing.assert_array_equal(tiles, expected)
  with pytest.raises(ValueError, match="even"):
    ffc.quadrants_to_channels(jnp.zeros((1, 5, 4, 3)))


def test_local_fourier_unit_changes_the_output():
  x = jnp.asarray(np.random.default_rng(5).standard_normal((1, 8, 8, 32)),
                  jnp.float32)
  plain = ffc.SpectralTransform(32)
  with_lfu = ffc.SpectralTransform(32, enable_lfu=True)
  shapes = jax.eval_shape(with_lfu.init, jax.random.key(0), x)["params"]
  assert shapes["lfu"]["conv"]["kernel"].shape == (32, 32)
  params = random_params(shapes, seed=6)
  without = {k: v for k, v in params.items() if k != "lfu"}
  a = fast_jit(plain.apply)({"params": without}, x)
  b = fast_jit(with_lfu.apply)({"params": params}, x)
  assert a.shape == b.shape == x.shape
  assert float(jnp.abs(a - b).max()) > 1e-3


def test_ffc_res_block_starts_as_identity():
  x = jnp.asarray(np.random.default_rng(7).standard_normal((2, 8, 8, 32)),
                  jnp.float32)
  emb = jnp.ones((2, 16))
  block = ffc.FFCResBlock(32, use_scale_shift_norm=True)

  def init_and_apply(key):
    variables = block.init(key, x, emb, False)
    return variables["params"], block.apply(variables, x, emb, False)

  params, out = fast_jit(init_and_apply)(jax.random.key(0))
  np.testing.assert_array_equal(out, x)
  assert "g2g" in params["in_conv"] and "g2g" in params["out_conv"]
  assert float(jnp.abs(params["in_conv"]["g2g"]["conv2"]["kernel"]).max()) > 0


@pytest.mark.parametrize("args, match", [
    ((32, 32, 1.5, 0.75, False), "ratio_gin"),
    ((32, 32, 0.75, -0.1, False), "ratio_gout"),
    ((32, 4, 0.75, 0.25, False), "global channel"),
    ((32, 40, 0.75, 0.75, True), "enable_lfu"),
])
def test_impossible_ffc_layers_are_refused(args, match):
  with pytest.raises(ValueError, match=match):
    ffc.check_ffc(*args)
