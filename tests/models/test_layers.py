"""The U-Net's layers against closed forms and the numpy guided-diffusion."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gd_reference
from model_helpers import fast_jit, relative_error
from ffc_ddpm.models import layers


@pytest.mark.parametrize("dim", [8, 9])
def test_timestep_embedding_is_cos_then_sin(dim):
  t = np.array([0.0, 1.0, 17.5, 999.0])
  half = dim // 2
  freqs = 10_000.0 ** (-np.arange(half) / half)
  expected = np.concatenate([np.cos(t[:, None] * freqs),
                             np.sin(t[:, None] * freqs)], axis=1)
  if dim % 2:
    expected = np.pad(expected, ((0, 0), (0, 1)))
  got = layers.timestep_embedding(jnp.asarray(t), dim)
  assert got.shape == (4, dim) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, atol=2e-4)


def numpy_group_norm(x, groups=32, eps=1e-5):
  n, h, w, c = x.shape
  g = x.astype(np.float64).reshape(n, h * w, groups, c // groups)
  mean = g.mean(axis=(1, 3), keepdims=True)
  var = g.var(axis=(1, 3), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)


def test_group_norm_is_float32_two_pass():
  """Large offsets would wreck E[x^2] - E[x]^2 in float32; two passes do not."""
  rng = np.random.default_rng(0)
  x = (1e3 + rng.standard_normal((2, 4, 4, 64))).astype(np.float32)
  norm = layers.GroupNorm32()
  variables = {"params": {"scale": jnp.ones(64), "bias": jnp.zeros(64)}}
  # float32 keeps ~6e-5 of 1e3: two passes stay within 1e-3, one pass is off
  # by ~0.7.
  np.testing.assert_allclose(norm.apply(variables, x), numpy_group_norm(x),
                             atol=1e-3)
  x16 = jnp.asarray(rng.standard_normal((2, 4, 4, 64)), jnp.bfloat16)
  y16 = norm.apply(variables, x16)
  assert y16.dtype == jnp.bfloat16
  expected = numpy_group_norm(np.asarray(x16, np.float32))
  np.testing.assert_allclose(np.asarray(y16, np.float32), expected, atol=2e-2)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_matches_guided_diffusion(new_order):
  rng = np.random.default_rng(1)
  channels, heads = 64, 4
  x = rng.standard_normal((2, 4, 4, channels)).astype(np.float32)
  torch_params = {
      "norm.weight": 1 + 0.2 * rng.standard_normal(channels),
      "norm.bias": 0.2 * rng.standard_normal(channels),
      "qkv.weight": rng.standard_normal((3 * channels, channels, 1)) / 8,
      "qkv.bias": 0.2 * rng.standard_normal(3 * channels),
      "proj_out.weight": rng.standard_normal((channels, channels, 1)) / 8,
      "proj_out.bias": 0.2 * rng.standard_normal(channels),
  }
  params = {
      "norm": {"scale": torch_params["norm.weight"],
               "bias": torch_params["norm.bias"]},
      "qkv": {"kernel": torch_params["qkv.weight"][:, :, 0].T,
              "bias": torch_params["qkv.bias"]},
      "proj_out": {"kernel": torch_params["proj_out.weight"][:, :, 0].T,
                   "bias": torch_params["proj_out.bias"]},
  }
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  expected = gd_reference.attention(
      torch_params, x.transpose(0, 3, 1, 2).astype(np.float64), heads,
      new_order).transpose(0, 2, 3, 1)
  for dtype, tolerance in ((jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)):
    block = layers.AttentionBlock(heads, new_order, dtype)
    got = fast_jit(block.apply)({"params": params}, jnp.asarray(x, dtype))
    assert got.dtype == dtype
    assert relative_error(got, expected) < tolerance


def test_attention_logits_stay_float32_in_bfloat16():
  """Logits 100 and 100.625: bfloat16 would round the second to 100.5."""
  q = jnp.full((1, 1, 1, 1), 10.0, jnp.bfloat16)
  k = jnp.array([10.0, 10.0625], jnp.bfloat16).reshape(1, 2, 1, 1)
  v = jnp.array([0.0, 1.0], jnp.bfloat16).reshape(1, 2, 1, 1)
  out = float(layers.attend(q, k, v)[0, 0, 0, 0])
  assert abs(out - 1 / (1 + math.exp(-0.625))) < 4e-3  # not 0.6225


def test_attention_splits_heads_in_both_orders():
  width, heads = 12, 2  # head width 2: channel c of q/k/v in head h
  qkv = jnp.arange(3 * width, dtype=jnp.float32).reshape(1, 1, 3 * width)
  legacy = layers.split_qkv(qkv, heads, new_order=False)
  new = layers.split_qkv(qkv, heads, new_order=True)
  head_dim = width // heads
  for part in range(3):
    for h in range(heads):
      for c in range(head_dim):
        assert legacy[part][0, 0, h, c] == (h * 3 + part) * head_dim + c
        assert new[part][0, 0, h, c] == part * width + h * head_dim + c


def test_downsample_pads_like_pytorch():
  """Stride-2 3x3 conv with one pixel of padding on every side."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((1, 6, 6, 32)).astype(np.float32)
  w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32) / 17
  b = rng.standard_normal(32).astype(np.float32)
  params = {"conv": {"kernel": w.transpose(2, 3, 1, 0), "bias": b}}
  got = layers.Downsample(use_conv=True).apply({"params": params}, x)
  expected = gd_reference.conv2d(x.transpose(0, 3, 1, 2).astype(np.float64),
                                 w, b, stride=2).transpose(0, 2, 3, 1)
  assert got.shape == (1, 3, 3, 32)
  np.testing.assert_allclose(got, expected, atol=1e-5)
  pooled = layers.Downsample(use_conv=False).apply({}, x)
  np.testing.assert_allclose(
      pooled, x.reshape(1, 3, 2, 3, 2, 32).mean(axis=(2, 4)), atol=1e-6)


def test_upsample_is_nearest():
  x = jnp.arange(4.0).reshape(1, 2, 2, 1)
  up = layers.Upsample(use_conv=False).apply({}, x)
  np.testing.assert_array_equal(
      up[0, :, :, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_res_block_scale_shift_order():
  """norm(h) * (1 + scale) + shift, with the scale the first half of emb."""
  block = layers.ResBlock(32, use_scale_shift_norm=True)
  x = jnp.ones((1, 4, 4, 32))
  emb = jnp.ones((1, 8))
  params = jax.tree.map(jnp.zeros_like, jax.eval_shape(
      lambda: block.init(jax.random.key(0), x, emb, False))["params"])
  # Zero convs: h is 0 before out_norm, so norm(h) = its bias b; the block
  # returns x + out_conv(silu(b * (1 + scale) + shift)).
  params["out_norm"]["bias"] = jnp.full((32,), 2.0)
  params["emb_proj"]["bias"] = jnp.concatenate(
      [jnp.full((32,), 3.0), jnp.full((32,), -1.0)])
  params["out_conv"]["bias"] = jnp.zeros((32,))
  kernel = np.zeros((3, 3, 32, 32), np.float32)
  kernel[1, 1] = np.eye(32)
  params["out_conv"]["kernel"] = jnp.asarray(kernel)
  got = fast_jit(lambda p: block.apply({"params": p}, x, emb, False))(params)
  value = 2.0 * (1 + 3.0) - 1.0
  expected = 1.0 + value / (1 + math.exp(-value))
  np.testing.assert_allclose(got[0, 1, 1], np.full(32, expected), rtol=1e-6)


def test_group_norm_and_its_gradients_equal_flax_group_norm():
  """Against flax's own GroupNorm (float32, two-pass), values and gradients,
  for 32 groups of one, two and four channels and a smaller group count."""
  rng = np.random.default_rng(3)
  for channels, groups in ((32, 32), (64, 32), (128, 32), (48, 12)):
    x = jnp.asarray(2 + 3 * rng.standard_normal((2, 8, 4, channels)),
                    jnp.float32)
    params = {"scale": jnp.asarray(1 + rng.standard_normal(channels),
                                   jnp.float32),
              "bias": jnp.asarray(rng.standard_normal(channels), jnp.float32)}
    target = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    ours = layers.GroupNorm32(groups)
    flax_norm = nn.GroupNorm(groups, epsilon=1e-5, use_fast_variance=False)

    def loss(module, x, p):
      return jnp.sum(jnp.sin(module.apply({"params": p}, x)) * target)

    np.testing.assert_allclose(ours.apply({"params": params}, x),
                               flax_norm.apply({"params": params}, x),
                               atol=2e-6)
    for a, b in zip(jax.grad(loss, (1, 2))(ours, x, params),
                    jax.grad(loss, (1, 2))(flax_norm, x, params)):
      for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(leaf_a, leaf_b, atol=2e-5, rtol=1e-5)
