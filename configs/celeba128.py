"""The 128x128 release: configs/celeba64.py's network one octave up, on
CelebA crops and aligned CelebA faces, started from the 64x64 weights.

The same U-Net applied at 128x128, attention kept at the same two levels
(now 32 and 16 pixels), so every parameter of weights/celeba64.npz has its
place and a run starts from them (`train.init_weights`) instead of from
noise. Half the batches are aligned faces (the framing of most users'
photos), half CelebA crops; whole people are held out of the aligned faces
for testing and validation. Sized for a 2-core CPU: about 10 s a step, so
5,000 steps are about 14 CPU-hours, run in sittings that resume from the
checkpoint saved every 50 steps (benchmarks/quality.md).

  python -m ffc_ddpm.main --config=configs/celeba128.py --workdir=$HOME/runs/celeba128

(from the repository root, with the shared data folder beside it).
"""

from configs import celeba64


def get_config():
  config = celeba64.get_config()
  config.data.image_size = 128
  shared = "../shared/data/"
  config.data.path = f"{shared}celeba_crops_128,{shared}celeba_aligned_128"
  config.data.path_weights = "0.5,0.5"
  config.data.identities = f",{shared}celeba_aligned_128_identities.csv"
  # 17 people (510 photos) for testing and 8 (240) for validation; the
  # crops hold out 1,000 and 64 photos as in celeba64.
  config.data.test_identities = 17
  config.data.val_identities = 8
  # Thin free-form strokes (the LaMa kind, generated) in a third of the
  # batches: +0.28 ± 0.09 dB on ../shared/data/masks/thin at no cost on the
  # centre (equal-CPU trials at 64x64, benchmarks/quality.md).
  config.data.train_masks = "center,random,thin"
  config.model.attention_resolutions = (32, 16)

  config.train.init_weights = "weights/celeba64.npz"
  config.train.num_steps = 5000
  config.train.learning_rate = 3e-4
  config.train.warmup_steps = 100
  config.train.checkpoint_every = 50
  config.train.keep_every = 1000
  config.train.image_every = 500
  config.train.quick_eval_every = 500

  config.eval.masks = ("center", "random", "folder:../shared/data/masks/thin",
                       "folder:../shared/data/masks/thick")
  config.eval.num_images = 200
  return config
