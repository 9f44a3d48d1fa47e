"""The paper: FFC-DDPM face inpainting on CelebA-HQ at 256x256.

T = 2,000 steps with beta rising linearly from 1e-6 to 1e-2; the network sees
abar (noise-level conditioning) and predicts eps; the loss is the MSE over the
region to inpaint; FFC blocks replace the first residual blocks; Adam with a
cosine learning-rate decay. Split 27,982 train / 18 validation / 2,000 test.

CelebA-HQ cannot be downloaded automatically: put TFDS's manual files
(data256x256.tar) in a folder and pass it, e.g.
  python -m ffc_ddpm.main --config=configs/celebahq.py --workdir=runs/celebahq \
      --config.data.path=$HOME/tensorflow_datasets/downloads/manual
or point a folder of images at it with --config.data.source=folder.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = "tfds"
  config.data.image_size = 256
  config.data.num_val = 18
  config.data.num_test = 2000
  config.data.num_workers = 8

  config.diffusion.schedule = "linear"
  config.diffusion.num_steps = 2000
  config.diffusion.beta_start = 1e-6
  config.diffusion.beta_end = 1e-2
  config.diffusion.conditioning = "concat"
  config.diffusion.loss = "mse"
  config.diffusion.loss_region = "hole"
  config.diffusion.loss_normalisation = "hole"  # each example's hole mean

  config.model.model_channels = 128
  config.model.channel_mult = (1, 1, 2, 2, 4, 4)
  config.model.num_res_blocks = 2
  config.model.attention_resolutions = (32, 16, 8)
  config.model.num_head_channels = 64
  config.model.use_scale_shift_norm = True
  config.model.resblock_updown = True
  config.model.dropout = 0.1
  config.model.noise_conditioning = "abar"
  config.model.dtype = "bfloat16"
  config.model.ffc.enabled = True
  config.model.ffc.num_blocks = 2
  config.model.ffc.ratio_gin = 0.75
  config.model.ffc.ratio_gout = 0.75

  config.train.num_steps = 500_000
  config.train.batch_size = 32
  config.train.learning_rate = 1e-4
  config.train.warmup_steps = 5000
  config.train.lr_schedule = "cosine"

  config.eval.masks = ("center", "random")
  config.eval.num_images = 2000
  config.eval.sampler = "ddim"
  config.eval.num_steps = 100
  return config
