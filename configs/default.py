"""Shared base configuration: every hyper-parameter of ffc_ddpm, with its meaning.

Variants (`celebahq.py`, `demo.py`, ...) import this and override a few fields.
Every field can be overridden on the command line, e.g.
`--config.train.batch_size=8` or `--config.eval.masks="('center', 'random')"`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # The one seed: parameter init, noise, data order and evaluation masks all
  # derive from it with jax.random.fold_in / numpy SeedSequence.
  config.seed = 0

  # ------------------------------------------------------------------ data
  data = config.data = ml_collections.ConfigDict()
  data.source = "synthetic"  # synthetic | folder | tfds | arrayrecord
  # folder: a directory searched recursively for jpg/png/webp images, or
  # several separated by commas ("A,B"), each split on its own and mixed;
  # tfds: the manual-download directory holding data{N}x{N}.tar;
  # arrayrecord: a file written by tools/prepare_dataset.py.
  data.path = ""
  # Several folders: the probability that a training example is drawn from
  # each, whatever its size ("0.7,0.3"; "" = equal; 0 = validation and test
  # only).
  data.path_weights = ""
  data.tfds_data_dir = ""  # where TFDS keeps prepared data ("" = its default)
  data.image_size = 256
  data.resize = "center_crop"  # center_crop | resize: how other sizes become image_size
  # Held-out images (of each folder without identities); the rest of the
  # source trains. CelebA-HQ: 27,982/18/2,000.
  data.num_val = 18
  data.num_test = 2000
  # A CSV `file,identity` (files relative to their folder) per folder of
  # data.path, comma-separated, "" for a folder without (",ids.csv"). A
  # folder with one holds out whole people: test_identities, then
  # val_identities of its identities, drawn by split_seed, instead of
  # num_test / num_val photos, so no person is in two splits.
  data.identities = ""
  data.test_identities = 0
  data.val_identities = 0
  data.num_train = 50_000  # synthetic source only: how many distinct train faces
  # Fixed apart from `seed`, so the test split never moves; -1 = ordered split
  # of sorted file names (the last num_test are test: the paper's CelebA-HQ).
  data.split_seed = 0
  data.skip_bad_files = False  # True: unreadable images are skipped and counted
  data.num_workers = 0  # grain worker processes (0 = in the main process)
  data.prefetch = 2  # batches buffered per worker
  # Mask protocol drawn for each training example, or several separated by
  # commas ("center,random"), drawn uniformly.
  data.train_masks = "mixed"
  aug = data.augment = ml_collections.ConfigDict()
  aug.crop_min_scale = 0.85  # random crop keeps this fraction of each side, or more
  aug.hflip = True
  aug.brightness = 0.1  # colour jitter: factors drawn in [1 - x, 1 + x]
  aug.contrast = 0.1
  aug.saturation = 0.1
  aug.hue = 0.02  # hue shift in turns, drawn in [-x, x]
  # Zooming out: the framing window's side is drawn in
  # [crop_min_scale, 1 / zoom_out_min_scale]; above 1 the whole image,
  # shrunk to as little as this fraction of the side, lies anywhere in the
  # frame (1 = off).
  aug.zoom_out_min_scale = 1.0
  aug.rotate_degrees = 0.0  # rotation drawn in [-x, x] degrees (0 = off)
  # What fills the frame beyond the image when zooming out or rotating:
  # reflect (mirrored) | edge (edge pixels stretched) | black.
  aug.pad_mode = "reflect"

  # ------------------------------------------------------------- diffusion
  diffusion = config.diffusion = ml_collections.ConfigDict()
  # linear: beta_start..beta_end (the paper: 1e-6..1e-2 over T = 2,000);
  # scaled_linear: guided-diffusion's "linear" (1e-4..0.02 scaled by 1000/T);
  # cosine: Nichol & Dhariwal (2021).
  diffusion.schedule = "linear"
  diffusion.num_steps = 2000
  diffusion.beta_start = 1e-6
  diffusion.beta_end = 1e-2
  # concat: Palette-style conditional model fed (x_t, masked image, mask);
  # none: unconditional model, inpainting by RePaint sampling.
  diffusion.conditioning = "concat"
  # What the condition holds in the hole: zeros (the paper, Palette) or
  # harmonic, the smooth fill of its border (process.harmonic_fill), so
  # the network learns what a classical fill misses.
  diffusion.prefill = "zeros"
  diffusion.loss = "mse"  # mse | l1 on the predicted noise
  diffusion.loss_region = "hole"  # hole (the paper) | full
  # What the summed error is divided by: hole = the values of the region
  # (each example's mean over its hole, the paper); all = all H x W x C values
  # (Palette's mean over all values of mask * eps, so big holes weigh more).
  diffusion.loss_normalisation = "hole"
  diffusion.clip_denoised = True  # clip predicted x_0 to [-1, 1] when sampling

  # ----------------------------------------------------------------- model
  model = config.model = ml_collections.ConfigDict()
  model.image_size = data.get_ref("image_size")
  model.in_channels = 7  # 3 (x_t) + 3 (masked image) + 1 (mask); 3 if unconditional
  model.out_channels = 3
  model.model_channels = 128
  model.channel_mult = ()  # () = guided-diffusion's default for image_size
  model.num_res_blocks = 2
  model.attention_resolutions = (32, 16, 8)
  model.num_heads = 4
  model.num_head_channels = 64  # -1: heads by count (num_heads)
  model.num_heads_upsample = -1
  model.use_new_attention_order = False
  model.use_scale_shift_norm = True
  model.resblock_updown = True
  model.conv_resample = True
  model.dropout = 0.0
  model.learn_sigma = False  # imported guided-diffusion models only
  model.num_classes = 0  # class-conditional guided-diffusion models
  # abar: the paper (Palette/WaveGrad), the model sees abar_t and any schedule
  # can be used at sampling time; timestep: guided-diffusion's integer t.
  model.noise_conditioning = "abar"
  model.noise_level_scale = 1000.0  # abar is embedded as sin/cos of scale * abar
  model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
  model.remat = False  # rematerialise each block in the backward pass
  ffc = model.ffc = ml_collections.ConfigDict()
  ffc.enabled = True
  ffc.num_blocks = 2  # shallowest encoder residual blocks replaced by FFC blocks
  ffc.decoder_blocks = 0  # last full-resolution decoder blocks replaced too
  ffc.ratio_gin = 0.75  # global share of the input channels (LaMa: 0.75)
  ffc.ratio_gout = 0.75
  ffc.enable_lfu = False  # local Fourier unit in the spectral transform

  # ----------------------------------------------------------------- train
  train = config.train = ml_collections.ConfigDict()
  train.num_steps = 500_000
  # A weights file (tools/export_weights.py) whose parameters start a new
  # run instead of random ones, e.g. a 64x64 model for a 128x128 run of the
  # same network ("" = random; a run resuming its checkpoint ignores it).
  train.init_weights = ""
  train.batch_size = 32  # global, over all devices and hosts
  train.optimizer = "adam"  # adam | adamw
  train.learning_rate = 1e-4  # peak, after warm-up
  train.warmup_steps = 1000
  train.lr_schedule = "cosine"  # cosine (the paper) | constant
  train.min_lr_ratio = 0.0  # cosine decays to learning_rate * min_lr_ratio
  train.weight_decay = 0.0
  train.b1 = 0.9
  train.b2 = 0.999
  train.grad_clip_norm = 1.0  # 0 = no clipping
  train.ema_decay = 0.9999
  train.log_every = 100
  train.checkpoint_every = 5000
  train.keep_checkpoints = 3  # the latest k
  train.keep_every = 50_000  # and every M-th step for good (0 = none)
  train.image_every = 5000  # inpainting grids of a fixed validation batch (0 = never)
  train.quick_eval_every = 10_000  # PSNR/SSIM on validation (0 = never)
  train.quick_eval_images = 16
  train.eval_after_train = True
  train.model_axis_size = 1  # >1 shards parameters over a second mesh axis

  # ------------------------------------------------------------------ eval
  ev = config.eval = ml_collections.ConfigDict()
  # center | random | large | thin | medium | thick | box | folder:PATH
  ev.masks = ("center", "random")
  ev.num_images = 2000
  ev.batch_size = 16  # global: images per sampler call (batch_size // K faces)
  ev.split = "test"
  # ddpm | ddim | repaint (unconditional models) | dpm_solver (DPM-Solver++
  # 2M, Lu et al. 2022: a second-order ODE solver, for 10-20 steps)
  ev.sampler = "ddim"
  # denoising steps = network calls (repaint: its t_T), respaced from
  # diffusion.num_steps
  ev.num_steps = 100
  # uniform (guided-diffusion's even respacing) | quadratic (DDIM: denser at
  # low noise) | log_snr (DPM-Solver's equal steps in log(abar / (1 - abar)))
  ev.timestep_spacing = "uniform"
  # K: samples drawn per image (distinct noise, all K in one sampler call);
  # with K > 1 the per-pixel mean of the K, the distortion-optimal estimate
  # PSNR/SSIM reward, is scored beside sample 0.
  ev.num_samples = 1
  ev.eta = 0.0  # DDIM stochasticity
  ev.jump_length = 10  # RePaint resampling
  ev.jump_n_sample = 10
  ev.use_ema = True
  ev.baselines = ("mean", "telea", "biharmonic")
  ev.num_grid_images = 8
  ev.lpips_weights = ""  # path to LPIPS weights (.npz); "" = LPIPS left out
  ev.fid_weights = ""  # path to Inception weights (.npz); "" = FID left out
  return config
