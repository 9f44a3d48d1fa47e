"""Tiny settings for the test suite: every stage runs in seconds on a CPU."""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = "synthetic"
  config.data.image_size = 16
  config.data.num_train = 64
  config.data.num_val = 4
  config.data.num_test = 8
  config.data.augment.crop_min_scale = 0.9

  config.diffusion.num_steps = 100
  config.diffusion.beta_start = 1e-4
  config.diffusion.beta_end = 0.05

  config.model.model_channels = 32
  config.model.channel_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.attention_resolutions = (8,)
  config.model.num_heads = 2
  config.model.num_head_channels = -1
  config.model.ffc.num_blocks = 1

  config.train.num_steps = 4
  config.train.batch_size = 4
  config.train.warmup_steps = 2
  config.train.learning_rate = 1e-3
  config.train.ema_decay = 0.9
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.train.image_every = 4
  config.train.quick_eval_every = 4
  config.train.quick_eval_images = 4
  config.train.keep_every = 0

  config.eval.num_images = 4
  config.eval.batch_size = 4
  config.eval.sampler = "ddim"
  config.eval.num_steps = 4
  config.eval.num_grid_images = 4
  return config
