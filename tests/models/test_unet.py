"""The U-Net: shapes, FFC placement, dtypes, jit, remat, dropout, checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import gd_reference
from model_helpers import (fast_jit, param_shapes, random_params,
                           relative_error, small_config)
from ffc_ddpm import models
from ffc_ddpm.models import unet

NOISE = jnp.array([0.9, 0.05])  # abar per example
FLOAT32 = np.dtype(np.float32)


def inputs(batch=2, size=8, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, size, size, 3)), jnp.float32)
  cond = jnp.asarray(rng.standard_normal((batch, size, size, 4)), jnp.float32)
  return x, cond


def tiny_config(**overrides):
  """One level: an FFC block in, one out, attention in the middle block."""
  return small_config(channel_mult=(1,), attention_resolutions=(),
                      dropout=0.1, **overrides)


@pytest.fixture(scope="module")
def net():
  """The tiny FFC U-Net (dropout on), random weights, a jitted forward."""
  config = tiny_config()
  model = models.create_model(config)
  params = random_params(param_shapes(model, config), seed=0)
  forward = fast_jit(lambda p, x, noise, cond: model.apply(
      {"params": p}, x, noise, cond))
  return config, model, params, forward


# ----------------------------------------------------------------- shapes
@pytest.mark.parametrize("overrides, x_shape, cond_channels, out_shape", [
    ({}, (2, 16, 16, 3), 4, (2, 16, 16, 3)),
    ({"in_channels": 3, "learn_sigma": True, "noise_conditioning": "timestep"},
     (2, 16, 16, 3), 0, (2, 16, 16, 6)),
    ({"image_size": 32, "model_channels": 64, "channel_mult": (1, 2, 2),
      "attention_resolutions": (16, 8)}, (1, 32, 48, 3), 4, (1, 32, 48, 3)),
    ({"image_size": 256, "model_channels": 128, "channel_mult": (),
      "num_res_blocks": 2, "attention_resolutions": (32, 16, 8),
      "num_head_channels": 64, "ffc.num_blocks": 2}, (1, 256, 256, 3), 4,
     (1, 256, 256, 3)),
])
def test_output_shapes(overrides, x_shape, cond_channels, out_shape):
  config = small_config(**overrides)
  model = models.create_model(config)
  shapes = param_shapes(model, config)
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  cond = jax.ShapeDtypeStruct(x_shape[:3] + (cond_channels,), jnp.float32)
  noise = jax.ShapeDtypeStruct(x_shape[:1], jnp.float32)
  out = jax.eval_shape(
      lambda p, x, n, c: model.apply({"params": p}, x, n, c), shapes, x,
      noise, cond if cond_channels else None)
  assert (out.shape, out.dtype) == (out_shape, jnp.float32)


def test_bfloat16_model_keeps_float32_params_and_output():
  config = small_config(dtype="bfloat16")
  model = models.create_model(config)
  shapes = param_shapes(model, config)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {FLOAT32}
  x, cond = inputs(size=16)
  out = jax.eval_shape(lambda p: model.apply({"params": p}, x, NOISE, cond),
                       shapes)
  assert out.dtype == jnp.float32


def test_bfloat16_is_close_to_float32(net):
  _, _, params, forward = net
  x, cond = inputs()
  reference = forward(params, x, NOISE, cond)
  bf16 = models.create_model(tiny_config(dtype="bfloat16"))
  out = fast_jit(lambda p: bf16.apply({"params": p}, x, NOISE, cond))(params)
  assert out.dtype == jnp.float32
  error = relative_error(out, reference)
  assert 0 < error < 0.03, error


def test_jit_traces_once_per_shape(net):
  _, model, params, _ = net
  traces = []

  def forward(p, x, noise, cond):
    traces.append(x.shape)
    return model.apply({"params": p}, x, noise, cond)

  forward = fast_jit(forward)
  for seed in (1, 2):  # new values, same shapes: no new trace
    x, cond = inputs(seed=seed)
    forward(params, x, NOISE * seed / 2, cond)
  assert traces == [(2, 8, 8, 3)]
  x, cond = inputs(batch=1)
  forward(params, x, NOISE[:1], cond)
  assert traces == [(2, 8, 8, 3), (1, 8, 8, 3)]


# ------------------------------------------------------ remat and dropout
def loss_and_grad(model):
  """sum(out * w) and its gradient, in training mode (dropout on)."""
  weights = jnp.asarray(np.random.default_rng(9).standard_normal(
      (2, 8, 8, 3)), jnp.float32)

  def loss(p, x, cond, key):
    out = model.apply({"params": p}, x, NOISE, cond, train=True,
                      rngs={"dropout": key})
    return jnp.sum(out * weights), out

  return fast_jit(jax.value_and_grad(loss, has_aux=True))


def test_remat_gives_identical_outputs_and_gradients(net):
  _, model, params, forward = net
  rematted = models.create_model(tiny_config(remat=True))
  x, cond = inputs()
  key = jax.random.key(3)
  (loss, out), grads = loss_and_grad(model)(params, x, cond, key)
  (loss_r, out_r), grads_r = loss_and_grad(rematted)(params, x, cond, key)
  # The same computation, up to float32 reassociation by XLA.
  assert relative_error(out_r, out) < 1e-5
  assert relative_error(loss_r, loss) < 1e-5
  assert jax.tree.structure(grads) == jax.tree.structure(grads_r)
  flat = lambda tree: np.concatenate([np.ravel(g)
                                      for g in jax.tree.leaves(tree)])
  assert relative_error(flat(grads_r), flat(grads)) < 1e-5

  # Dropout: on in training only, and a new key gives a new mask.
  evaluation = forward(params, x, NOISE, cond)
  assert relative_error(out, evaluation) > 1e-3
  (_, out_other), _ = loss_and_grad(model)(params, x, cond, jax.random.key(4))
  assert relative_error(out_other, out) > 1e-3


# ----------------------------------------------------------- FFC placement
def block_counts(tree):
  """Parameter count per top-level block of our params tree."""
  return {name: sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(sub))
          for name, sub in tree.items()}


def reference_block_counts(kwargs):
  """The same per block from guided-diffusion's own layout (numpy)."""
  counts = {}
  for key, shape in gd_reference.state_shapes(kwargs).items():
    parts = key.split(".")
    depth = {"input_blocks": 3, "output_blocks": 3, "middle_block": 2}.get(
        parts[0], 2)
    block = "_".join(parts[:depth])
    counts[block] = counts.get(block, 0) + math.prod(shape)
  renames = {"time_embed_2": "time_embed_1", "out_0": "out_norm",
             "out_2": "out_conv"}
  return {renames.get(k, k): v for k, v in counts.items()}


def test_ffc_off_is_exactly_guided_diffusion():
  config = small_config(in_channels=3, **{"ffc.enabled": False})
  ours = block_counts(param_shapes(models.create_model(config), config))
  kwargs = dict(image_size=16, num_channels=32, num_res_blocks=1,
                channel_mult="1,2", attention_resolutions="8",
                num_head_channels=16, use_scale_shift_norm=True,
                resblock_updown=True)
  assert ours == reference_block_counts(kwargs)


def ffc_blocks(tree):
  flat = traverse_util.flatten_dict(tree)
  return sorted({path[0] for path in flat if "g2g" in path})


@pytest.mark.parametrize("num_blocks, decoder_blocks, expected", [
    (1, 0, ["input_blocks_1_0"]),
    (2, 1, ["input_blocks_1_0", "input_blocks_2_0", "output_blocks_5_0"]),
    (0, 3, ["output_blocks_3_0", "output_blocks_4_0", "output_blocks_5_0"]),
])
def test_ffc_blocks_replace_the_shallowest_res_blocks(num_blocks,
                                                      decoder_blocks, expected):
  config = small_config(num_res_blocks=2, **{
      "ffc.num_blocks": num_blocks, "ffc.decoder_blocks": decoder_blocks})
  with_ffc = param_shapes(models.create_model(config), config)
  assert ffc_blocks(with_ffc) == expected
  config.ffc.enabled = False
  plain = param_shapes(models.create_model(config), config)
  assert ffc_blocks(plain) == []
  assert set(plain) == set(with_ffc)
  for name in set(plain) - set(expected):  # every other block is unchanged
    assert jax.tree.map(lambda a: a.shape, plain[name]) == jax.tree.map(
        lambda a: a.shape, with_ffc[name])


# ------------------------------------------------------ noise conditioning
def embedding(model, params, noise_level, y=None):
  return model.apply({"params": params}, noise_level, y, len(noise_level),
                     method=unet.UNet.embedding)


def test_abar_is_embedded_as_scaled_timestep(net):
  _, model, params, _ = net
  abar = jnp.array([0.25, 0.999])
  timestep_model = models.create_model(
      tiny_config(noise_conditioning="timestep"))
  np.testing.assert_allclose(
      embedding(model, params, abar),
      embedding(timestep_model, params, abar * 1000.0), rtol=1e-5, atol=1e-6)
  palette = models.create_model(tiny_config(noise_level_scale=1.0))
  assert relative_error(embedding(palette, params, abar),
                        embedding(model, params, abar)) > 1e-2
  with pytest.raises(ValueError, match="abar"):
    embedding(model, params, jnp.array([10, 20]))


def test_class_labels_are_required_exactly_when_configured(net):
  _, model, params, _ = net
  with pytest.raises(ValueError, match="num_classes"):
    embedding(model, params, NOISE, y=jnp.array([1, 2]))
  config = small_config(num_classes=10)
  labelled = models.create_model(config)
  shapes = param_shapes(labelled, config)
  assert shapes["label_emb"]["embedding"].shape == (10, 128)
  with pytest.raises(ValueError, match="num_classes"):
    jax.eval_shape(lambda p: embedding(labelled, p, NOISE), shapes)


# ----------------------------------------------------------- input checks
def test_cond_is_concatenated_after_x(net):
  _, model, _, _ = net
  x, cond = inputs()
  joined = model.apply({}, x, cond, method=unet.UNet.network_input)
  np.testing.assert_array_equal(joined, jnp.concatenate([x, cond], -1))
  alone = model.apply({}, joined, None, method=unet.UNet.network_input)
  np.testing.assert_array_equal(alone, joined)


@pytest.mark.parametrize("x_shape, cond_shape, noise_shape, match", [
    ((2, 16, 16, 3), (2, 16, 16, 3), (2,), "6 channels"),
    ((2, 16, 16, 3), (2, 8, 8, 4), (2,), "cond must be"),
    ((2, 15, 15, 3), (2, 15, 15, 4), (2,), "multiples of 2"),
    ((2, 16, 16, 3), (2, 16, 16, 4), (3,), "noise_level"),
])
def test_bad_inputs_are_named(x_shape, cond_shape, noise_shape, match):
  config = small_config()  # two levels: H and W must be even
  model = models.create_model(config)
  params = param_shapes(model, config)
  args = [jax.ShapeDtypeStruct(s, jnp.float32)
          for s in (x_shape, noise_shape, cond_shape)]
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda p, x, n, c: model.apply({"params": p}, x, n, c),
                   params, *args)


@pytest.mark.parametrize("overrides, match", [
    ({"model_channels": 48}, "GroupNorm"),
    ({"num_head_channels": 24}, "heads must divide"),
    ({"num_head_channels": -1, "num_heads": 3}, "heads must divide"),
    ({"ffc.num_blocks": 2}, "ffc.num_blocks"),
    ({"ffc.decoder_blocks": 3}, "ffc.decoder_blocks"),
    ({"ffc.ratio_gin": 1.5}, "ratio_gin"),
    ({"ffc.num_blocks": 0, "ffc.decoder_blocks": 0}, "both 0"),
    ({"dtype": "float16"}, "model.dtype"),
    ({"noise_conditioning": "sigma"}, "noise_conditioning"),
    ({"channel_mult": (), "image_size": 48}, "channel_mult"),
    ({"attention_resolutions": (4,)}, "attention_resolutions"),
    ({"attention_resolutions": (12,)}, "attention_resolutions"),
    ({"dropout": 1.0}, "dropout"),
])
def test_impossible_configs_are_refused(overrides, match):
  with pytest.raises(ValueError, match=match):
    models.create_model(small_config(**overrides))


# ------------------------------------------------------------------ init
def test_init_params_gives_a_zero_output_network():
  """guided-diffusion zero-initialises every output layer (zero_module)."""
  config = tiny_config()
  model = models.create_model(config)
  x, cond = inputs()

  def init_and_apply(key):
    params = models.init_params(model, config, key)
    return params, model.apply({"params": params}, x, NOISE, cond)

  params, out = fast_jit(init_and_apply)(jax.random.key(0))
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {FLOAT32}
  assert float(jnp.abs(out).max()) == 0.0
  assert float(jnp.abs(params["input_blocks_1_0"]["in_conv"]["g2g"]["conv1"][
      "kernel"]).max()) > 0
  with pytest.raises(ValueError, match="model_config"):
    models.init_params(model, small_config(), jax.random.key(0))
