"""guided-diffusion's U-Net with FFC blocks in its shallowest layers.

`UNet` is guided-diffusion's `UNetModel` (Dhariwal & Nichol, 2021; every
option of its `create_model`) in Flax linen, NHWC. With `ffc_num_blocks` /
`ffc_decoder_blocks` > 0 the first full-resolution encoder residual blocks
(right after the input conv) and the last full-resolution decoder blocks are
FFC residual blocks, as the paper (Sec. Network) does; with both 0 the network
is exactly guided-diffusion's, parameter names included
(`input_blocks_{i}_{j}`, `middle_block_{j}`, `output_blocks_{i}_{j}` mirror
PyTorch's `input_blocks.i.j`, ...), which `ffc_ddpm.convert` relies on.

Noise-level conditioning (`noise_conditioning`):
- "timestep": guided-diffusion's integer (or rescaled float) timestep t;
- "abar": the paper's abar_t per example, following Palette (Saharia et al.,
  2022), which feeds abar itself -- not sqrt(abar), as WaveGrad does -- through
  guided-diffusion's sinusoidal embedding and MLP. We embed
  `noise_level_scale * abar`: scale 1 is Palette exactly; the default 1000
  spreads abar in [0, 1] over the range of timesteps the embedding's
  frequencies were designed for (WaveGrad's constant is 5000). Parameter names
  and shapes are the same in both modes.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ffc_ddpm.models import ffc, layers

# guided-diffusion's create_model(channel_mult="") per image size.
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
NOISE_CONDITIONING = ("timestep", "abar")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of the layout: what it is and its widths."""
  kind: str  # conv | res | ffc | attn | down | up
  in_channels: int
  out_channels: int
  num_heads: int = 0


def default_channel_mult(image_size: int) -> tuple[float, ...]:
  if image_size not in DEFAULT_CHANNEL_MULT:
    raise ValueError(
        f"model.channel_mult=() has a guided-diffusion default only for "
        f"image_size in {sorted(DEFAULT_CHANNEL_MULT)}, got {image_size}; "
        f"set it, e.g. (1, 2, 2)")
  return DEFAULT_CHANNEL_MULT[image_size]


class UNet(nn.Module):
  """The denoising network: eps (and, with learn_sigma, the variance value).

  Fields are those of `config.model` (see configs/default.py), `channel_mult`
  resolved and `ffc.*` flattened (0 blocks when FFC is off); build it with
  `create_model`. Call as `apply({"params": p}, x, noise_level, cond, y,
  train)` with x (N, H, W, C_x) and cond (N, H, W, C_c) concatenated on
  channels (C_x + C_c = in_channels), noise_level (N,) timesteps or abar, y
  (N,) class labels; returns float32 (N, H, W, out_channels * (1 +
  learn_sigma)). `train=True` enables dropout (rng collection 'dropout').
  """
  image_size: int
  in_channels: int
  out_channels: int
  model_channels: int
  channel_mult: tuple[float, ...]
  num_res_blocks: int
  attention_resolutions: tuple[int, ...]
  num_heads: int = 1
  num_head_channels: int = -1
  num_heads_upsample: int = -1
  use_new_attention_order: bool = False
  use_scale_shift_norm: bool = False
  resblock_updown: bool = False
  conv_resample: bool = True
  dropout: float = 0.0
  learn_sigma: bool = False
  num_classes: int = 0
  noise_conditioning: str = "timestep"
  noise_level_scale: float = 1000.0
  dtype: Any = jnp.float32
  remat: bool = False
  ffc_num_blocks: int = 0
  ffc_decoder_blocks: int = 0
  ffc_ratio_gin: float = 0.75
  ffc_ratio_gout: float = 0.75
  ffc_enable_lfu: bool = False

  def __post_init__(self):
    super().__post_init__()
    check_unet(self)

  # ---------------------------------------------------------------- layout
  def widths(self) -> list[int]:
    return [int(m * self.model_channels) for m in self.channel_mult]

  def attention_rates(self) -> set[int]:
    """Downsample rates with attention (guided-diffusion: image_size // res)."""
    return {self.image_size // r for r in self.attention_resolutions}

  def heads(self, channels: int, decoder: bool) -> int:
    if self.num_head_channels != -1:
      return channels // self.num_head_channels
    if decoder and self.num_heads_upsample != -1:
      return self.num_heads_upsample
    return self.num_heads

  def attention(self, channels: int, level: int, decoder: bool) -> list[Layer]:
    """An attention layer if the level's downsample rate is listed."""
    if 2 ** level not in self.attention_rates():
      return []
    return [Layer("attn", channels, channels, self.heads(channels, decoder))]

  def encoder_layout(self) -> list[list[Layer]]:
    """input_blocks: the input conv; per level res blocks, then a downsample."""
    widths = self.widths()
    ch = widths[0]
    blocks = [[Layer("conv", self.in_channels, ch)]]
    for level, width in enumerate(widths):
      for i in range(self.num_res_blocks):
        kind = "ffc" if level == 0 and i < self.ffc_num_blocks else "res"
        blocks.append([Layer(kind, ch, width)]
                      + self.attention(width, level, decoder=False))
        ch = width
      if level != len(widths) - 1:
        blocks.append([Layer("down", ch, ch)])
    return blocks

  def decoder_layout(self, skips: list[int]) -> list[list[Layer]]:
    """output_blocks, each fed one encoder output (width in `skips`) too."""
    widths, skips = self.widths(), list(skips)
    ch = skips[-1]
    last_plain = self.num_res_blocks - self.ffc_decoder_blocks
    blocks = []
    for level in reversed(range(len(widths))):
      for i in range(self.num_res_blocks + 1):
        kind = "ffc" if level == 0 and i > last_plain else "res"
        block = [Layer(kind, ch + skips.pop(), widths[level])]
        ch = widths[level]
        block += self.attention(ch, level, decoder=True)
        if level and i == self.num_res_blocks:
          block.append(Layer("up", ch, ch))
        blocks.append(block)
    return blocks

  def layout(self) -> tuple[list[list[Layer]], list[Layer], list[list[Layer]]]:
    """(input_blocks, middle_block, output_blocks), guided-diffusion's."""
    encoder = self.encoder_layout()
    skips = [block[-1].out_channels for block in encoder]
    ch = skips[-1]
    middle = [Layer("res", ch, ch),
              Layer("attn", ch, ch, self.heads(ch, decoder=False)),
              Layer("res", ch, ch)]
    return encoder, middle, self.decoder_layout(skips)

  # ----------------------------------------------------------------- build
  def make_layer(self, layer: Layer) -> nn.Module:
    maybe_remat = lambda cls, **kw: nn.remat(cls, **kw) if self.remat else cls
    res_kwargs = dict(dropout=self.dropout,
                      use_scale_shift_norm=self.use_scale_shift_norm,
                      dtype=self.dtype)
    res_block = maybe_remat(layers.ResBlock, static_argnums=(3,))
    if layer.kind == "conv":
      return layers.conv(layer.out_channels, 3, self.dtype)
    if layer.kind == "res":
      return res_block(layer.out_channels, **res_kwargs)
    if layer.kind == "ffc":
      return maybe_remat(ffc.FFCResBlock, static_argnums=(3,))(
          layer.out_channels, ratio_gin=self.ffc_ratio_gin,
          ratio_gout=self.ffc_ratio_gout, enable_lfu=self.ffc_enable_lfu,
          **res_kwargs)
    if layer.kind == "attn":
      return maybe_remat(layers.AttentionBlock)(
          layer.num_heads, self.use_new_attention_order, self.dtype)
    if self.resblock_updown:
      return res_block(layer.out_channels, resample=layer.kind, **res_kwargs)
    resample = layers.Downsample if layer.kind == "down" else layers.Upsample
    return resample(self.conv_resample, self.dtype)

  def setup(self):
    encoder, middle, decoder = self.layout()
    emb_width = 4 * self.model_channels
    self.time_embed = [nn.Dense(emb_width, dtype=jnp.float32)
                       for _ in range(2)]
    if self.num_classes:
      self.label_emb = nn.Embed(self.num_classes, emb_width)
    self.input_blocks = [[self.make_layer(l) for l in b] for b in encoder]
    self.middle_block = [self.make_layer(l) for l in middle]
    self.output_blocks = [[self.make_layer(l) for l in b] for b in decoder]
    self.out_norm = layers.GroupNorm32()
    self.out_conv = layers.conv(self.out_channels * (1 + self.learn_sigma), 3,
                                jnp.float32, zero_init=True)

  # ----------------------------------------------------------------- apply
  def network_input(self, x: jax.Array, cond: jax.Array | None) -> jax.Array:
    """x and cond concatenated on channels, checked, in the compute dtype."""
    inputs = [x] if cond is None else [x, cond]
    for name, a in zip(("x", "cond"), inputs):
      if a.ndim != 4 or a.shape[:3] != x.shape[:3]:
        raise ValueError(f"UNet: {name} must be (N, H, W, C) like x "
                         f"{tuple(x.shape)}, got {tuple(a.shape)}")
    channels = sum(a.shape[-1] for a in inputs)
    if channels != self.in_channels:
      raise ValueError(f"UNet: x and cond have {channels} channels together, "
                       f"model.in_channels is {self.in_channels}")
    factor = 2 ** (len(self.channel_mult) - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"UNet: H and W must be multiples of {factor} for "
                       f"{len(self.channel_mult)} levels, got "
                       f"{x.shape[1]}x{x.shape[2]}")
    return jnp.concatenate(inputs, axis=-1).astype(self.dtype)

  def embedding(self, noise_level: jax.Array, y: jax.Array | None,
                batch: int) -> jax.Array:
    """The (N, 4 * model_channels) float32 noise-level (+ label) embedding."""
    noise_level = jnp.asarray(noise_level)
    if noise_level.shape != (batch,):
      raise ValueError(f"UNet: noise_level must have shape ({batch},), got "
                       f"{noise_level.shape}")
    if self.noise_conditioning == "abar":
      if not jnp.issubdtype(noise_level.dtype, jnp.floating):
        raise ValueError(
            f"UNet: model.noise_conditioning='abar' expects abar_t in [0, 1] "
            f"as floats, got {noise_level.dtype} (timesteps?)")
      noise_level = noise_level * self.noise_level_scale
    emb = layers.timestep_embedding(noise_level, self.model_channels)
    emb = self.time_embed[1](nn.silu(self.time_embed[0](emb)))
    if (y is not None) != (self.num_classes > 0):
      raise ValueError(f"UNet: class labels y are needed exactly when "
                       f"model.num_classes > 0 (it is {self.num_classes})")
    if y is not None:
      if jnp.shape(y) != (batch,):
        raise ValueError(f"UNet: y must have shape ({batch},), got "
                         f"{jnp.shape(y)}")
      emb = emb + self.label_emb(y)
    return emb

  def __call__(self, x: jax.Array, noise_level: jax.Array,
               cond: jax.Array | None = None, y: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    h = self.network_input(x, cond)
    emb = self.embedding(noise_level, y, x.shape[0])
    skips = []
    for block in self.input_blocks:
      h = run_block(block, h, emb, train)
      skips.append(h)
    h = run_block(self.middle_block, h, emb, train)
    for block in self.output_blocks:
      h = jnp.concatenate([h, skips.pop()], axis=-1)
      h = run_block(block, h, emb, train)
    h = nn.silu(self.out_norm(h.astype(jnp.float32)))
    return self.out_conv(h)


def run_block(block: list[nn.Module], h: jax.Array, emb: jax.Array,
              train: bool) -> jax.Array:
  """guided-diffusion's TimestepEmbedSequential: emb goes to the ResBlocks."""
  for layer in block:
    h = layer(h, emb, train) if isinstance(layer, layers.ResBlock) else (
        layer(h))
  return h


def check_unet(net: UNet) -> None:
  """Raises ValueError, naming the config field, for an impossible network."""
  if net.noise_conditioning not in NOISE_CONDITIONING:
    raise ValueError(f"model.noise_conditioning={net.noise_conditioning!r}: "
                     f"expected one of {NOISE_CONDITIONING}")
  if not net.channel_mult or net.num_res_blocks < 0 or net.num_classes < 0:
    raise ValueError(f"model: channel_mult={net.channel_mult} must be "
                     f"non-empty, num_res_blocks={net.num_res_blocks} and "
                     f"num_classes={net.num_classes} >= 0")
  if not 0.0 <= net.dropout < 1.0:
    raise ValueError(f"model.dropout={net.dropout} must lie in [0, 1)")
  for mult, width in zip(net.channel_mult, net.widths()):
    if width <= 0 or width % layers.GROUPS:
      raise ValueError(
          f"model.model_channels * channel_mult = {net.model_channels} * "
          f"{mult} = {width} must be a positive multiple of the "
          f"{layers.GROUPS} GroupNorm groups")
  rates = [2 ** level for level in range(len(net.channel_mult))]
  if net.image_size % rates[-1]:
    raise ValueError(
        f"model.image_size={net.image_size} (data.image_size): expected a "
        f"multiple of {rates[-1]}, since the U-Net halves it "
        f"{len(rates) - 1} times (model.channel_mult has {len(rates)} "
        "levels)")
  for res in net.attention_resolutions:
    if res <= 0 or net.image_size % res or net.image_size // res not in rates:
      raise ValueError(
          f"model.attention_resolutions contains {res}: expected one of "
          f"{[net.image_size // r for r in rates]} (image_size / 2^level)")
  check_ffc_placement(net)
  encoder, middle, decoder = net.layout()
  for layer in [l for b in encoder + [middle] + decoder for l in b]:
    check_layer(net, layer)


def check_ffc_placement(net: UNet) -> None:
  if not 0 <= net.ffc_num_blocks <= net.num_res_blocks:
    raise ValueError(f"model.ffc.num_blocks={net.ffc_num_blocks} must lie in "
                     f"[0, model.num_res_blocks={net.num_res_blocks}]")
  if not 0 <= net.ffc_decoder_blocks <= net.num_res_blocks + 1:
    raise ValueError(
        f"model.ffc.decoder_blocks={net.ffc_decoder_blocks} must lie in "
        f"[0, model.num_res_blocks + 1 = {net.num_res_blocks + 1}]")


def check_layer(net: UNet, layer: Layer) -> None:
  """Attention heads must divide the width; FFC splits must be buildable."""
  if layer.kind == "attn":
    heads, ch = layer.num_heads, layer.out_channels
    if heads <= 0 or ch % heads or (
        net.num_head_channels != -1 and ch % net.num_head_channels):
      raise ValueError(
          f"model: attention at width {ch} with num_heads={net.num_heads}, "
          f"num_head_channels={net.num_head_channels}, num_heads_upsample="
          f"{net.num_heads_upsample}: the heads must divide the width")
  if layer.kind == "ffc":
    ffc.check_ffc(layer.in_channels, layer.out_channels, net.ffc_ratio_gin,
                  net.ffc_ratio_gout, net.ffc_enable_lfu)
    ffc.check_ffc(layer.out_channels, layer.out_channels, net.ffc_ratio_gout,
                  net.ffc_ratio_gout, net.ffc_enable_lfu)


def create_model(model_config) -> UNet:
  """The U-Net that `config.model` describes (fields in configs/default.py)."""
  c, f = model_config, model_config.ffc
  if c.dtype not in DTYPES:
    raise ValueError(f"model.dtype={c.dtype!r}: expected one of "
                     f"{sorted(DTYPES)}")
  if f.enabled and not (f.num_blocks or f.decoder_blocks):
    raise ValueError("model.ffc.enabled=True but model.ffc.num_blocks and "
                     "model.ffc.decoder_blocks are both 0")
  return UNet(
      image_size=c.image_size, in_channels=c.in_channels,
      out_channels=c.out_channels, model_channels=c.model_channels,
      channel_mult=tuple(c.channel_mult) or default_channel_mult(
          c.image_size),
      num_res_blocks=c.num_res_blocks,
      attention_resolutions=tuple(c.attention_resolutions),
      num_heads=c.num_heads, num_head_channels=c.num_head_channels,
      num_heads_upsample=c.num_heads_upsample,
      use_new_attention_order=c.use_new_attention_order,
      use_scale_shift_norm=c.use_scale_shift_norm,
      resblock_updown=c.resblock_updown, conv_resample=c.conv_resample,
      dropout=c.dropout, learn_sigma=c.learn_sigma,
      num_classes=c.num_classes, noise_conditioning=c.noise_conditioning,
      noise_level_scale=c.noise_level_scale, dtype=DTYPES[c.dtype],
      remat=c.remat, ffc_num_blocks=f.num_blocks if f.enabled else 0,
      ffc_decoder_blocks=f.decoder_blocks if f.enabled else 0,
      ffc_ratio_gin=f.ratio_gin, ffc_ratio_gout=f.ratio_gout,
      ffc_enable_lfu=f.enable_lfu)


def init_params(model: UNet, model_config, rng: jax.Array) -> dict:
  """Freshly initialised float32 parameters of `model`.

  `model_config` must be the config `model` was created from (checked, so a
  checkpoint is never restored into a network of another shape). The dummy
  batch is the smallest one the network accepts: parameters do not depend on
  H and W.
  """
  if create_model(model_config) != model:
    raise ValueError("init_params: model was not created from this "
                     "model_config")
  size = max(2, 2 ** (len(model.channel_mult) - 1))
  x = jnp.zeros((1, size, size, model.in_channels), jnp.float32)
  noise_level = jnp.zeros((1,), jnp.float32)
  y = jnp.zeros((1,), jnp.int32) if model.num_classes else None
  return model.init({"params": rng}, x, noise_level, y=y)["params"]
