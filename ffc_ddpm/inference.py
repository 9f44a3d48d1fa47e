"""The trained network as samplers use it, and its weights from a checkpoint."""

from absl import logging
import jax

from ffc_ddpm import checkpoint, models, parallel
from ffc_ddpm.diffusion import samplers


def inference_apply(model):
  """The model function samplers call: (params, x_t, noise_level, cond)."""
  return lambda params, x, noise_level, cond: model.apply(
      {"params": params}, x, noise_level, cond)


def create_sampler(config, model):
  """`config.eval`'s sampler around `model`."""
  return samplers.create_sampler(config, inference_apply(model))


def load_weights(config, workdir: str, mesh, step: int | None = None):
  """(module, params, step) from WORKDIR's checkpoint, laid out on `mesh`.

  The EMA weights when `config.eval.use_ema` and the checkpoint has them.
  """
  model = models.create_model(config.model)
  abstract = jax.eval_shape(
      lambda: models.init_params(model, config.model, jax.random.key(0)))
  shardings = parallel.param_sharding(mesh, abstract)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract, shardings)
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    params, step, name = ckpt.restore_weights(abstract, step,
                                              use_ema=config.eval.use_ema)
  finally:
    ckpt.close()
  logging.info("Loaded %s of step %d from %s", name, step, workdir)
  return model, params, step
