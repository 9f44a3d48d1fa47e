"""configs/celeba64.py at 128x128: the same method, one level deeper."""

from configs import celeba64


def get_config():
  config = celeba64.get_config()
  config.data.image_size = 128
  config.model.model_channels = 64
  config.model.channel_mult = (1, 1, 2, 3, 4)
  config.model.attention_resolutions = (16, 8)
  config.model.num_res_blocks = 2
  config.model.ffc.num_blocks = 2
  config.train.batch_size = 32
  config.train.num_steps = 100_000
  config.train.learning_rate = 2e-4
  config.train.ema_decay = 0.9999
  config.train.checkpoint_every = 2500
  config.train.keep_every = 25_000
  config.train.image_every = 5000
  config.train.quick_eval_every = 5000
  return config
