"""Fast Fourier Convolution (Chi et al., NeurIPS 2020) as LaMa uses it.

The paper (Sec. Network) puts FFC blocks right after the U-Net's input conv so
that the shallowest layers already see the whole image. The layers follow LaMa
(Suvorov et al., WACV 2022, `saicinpainting/training/modules/ffc.py`): the
channels split into a local part (the first `1 - ratio` share) and a global
part (the rest); local->local, global->local and local->global are 3x3 convs
(reflect padding, no bias); global->global is a spectral transform whose
Fourier unit convolves in the frequency domain, so one layer has a global
receptive field.

One deliberate change: LaMa normalises with BatchNorm + ReLU. A diffusion
model sees inputs at every noise level in one batch and is sampled one image
at a time, so batch statistics are meaningless; we use GroupNorm (float32,
32 groups or the largest count <= 32 dividing the width) + ReLU instead.
"""

import jax
import jax.numpy as jnp
import flax.linen as nn

from ffc_ddpm.models import layers


def num_groups(channels: int) -> int:
  """32 GroupNorm groups, or the largest count below that divides `channels`."""
  return max(g for g in range(1, layers.GROUPS + 1) if channels % g == 0)


def split_channels(channels: int, ratio_global: float) -> tuple[int, int]:
  """(local, global) widths; global = int(channels * ratio), as LaMa."""
  num_global = int(channels * ratio_global)
  return channels - num_global, num_global


def check_ffc(in_channels: int, out_channels: int, ratio_gin: float,
              ratio_gout: float, enable_lfu: bool) -> None:
  """Raises ValueError for an FFC layer that cannot be built."""
  for field, ratio in (("ratio_gin", ratio_gin), ("ratio_gout", ratio_gout)):
    if not 0.0 <= ratio <= 1.0:
      raise ValueError(f"model.ffc.{field}={ratio} must lie in [0, 1]")
  in_global = split_channels(in_channels, ratio_gin)[1]
  out_global = split_channels(out_channels, ratio_gout)[1]
  if in_global and out_global and out_global < 2:
    raise ValueError(
        f"model.ffc.ratio_gout={ratio_gout} gives {out_global} global channel "
        f"of {out_channels}; the spectral transform needs 0 or at least 2")
  if in_global and out_global and enable_lfu and (out_global // 2) % 4:
    raise ValueError(
        f"model.ffc.enable_lfu needs the spectral width {out_global // 2} "
        f"(half of the {out_global} global channels) divisible by 4")


def conv1x1(features: int, dtype, name: str,
            zero_init: bool = False) -> nn.Dense:
  """A bias-free 1x1 conv over the channel axis (LaMa's convs have no bias)."""
  return nn.Dense(features, use_bias=False, dtype=dtype,
                  kernel_init=layers.kernel_init(zero_init), name=name)


class FourierUnit(nn.Module):
  """1x1 conv + norm + ReLU on the 2-D spectrum (LaMa's FourierUnit).

  rfft2 over H and W ('ortho' norm), real and imaginary parts interleaved as
  channels [re_0, im_0, re_1, im_1, ...], then the conv, GroupNorm and ReLU,
  and irfft2 back to (H, W). The FFTs run in float32 (XLA has no bfloat16
  FFT); the result is cast to the input dtype.
  """
  out_channels: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, height, width, channels = x.shape
    spectrum = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")
    z = jnp.stack([spectrum.real, spectrum.imag], axis=-1)
    z = z.reshape(n, height, width // 2 + 1, 2 * channels)
    z = conv1x1(2 * self.out_channels, self.dtype, "conv")(z.astype(x.dtype))
    z = layers.GroupNorm32(num_groups(2 * self.out_channels), name="norm")(z)
    z = nn.relu(z).astype(jnp.float32)
    z = z.reshape(n, height, width // 2 + 1, self.out_channels, 2)
    spectrum = jax.lax.complex(z[..., 0], z[..., 1])
    y = jnp.fft.irfft2(spectrum, s=(height, width), axes=(1, 2), norm="ortho")
    return y.astype(x.dtype)


def quadrants_to_channels(x: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, H/2, W/2, 4C): the 2x2 tiles stacked on channels.

  LaMa's order: split along H, then along W (top-left, bottom-left, top-right,
  bottom-right).
  """
  _, height, width, _ = x.shape
  if height % 2 or width % 2:
    raise ValueError(f"model.ffc.enable_lfu needs even feature maps, "
                     f"got {height}x{width}")
  h2, w2 = height // 2, width // 2
  tiles = (x[:, :h2, :w2], x[:, h2:, :w2], x[:, :h2, w2:], x[:, h2:, w2:])
  return jnp.concatenate(tiles, axis=-1)


class SpectralTransform(nn.Module):
  """The global->global path: 1x1 conv to half width, Fourier unit(s), 1x1 back.

  conv2(x + FU(x) + LFU(x)) with x = ReLU(norm(conv1(input))). The optional
  local Fourier unit (LFU) applies a Fourier unit to the first quarter of the
  channels cut into 2x2 spatial tiles and tiles its output back over the image.
  """
  out_channels: int
  enable_lfu: bool = False
  zero_init: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    half = self.out_channels // 2
    x = conv1x1(half, self.dtype, "conv1")(x)
    x = nn.relu(layers.GroupNorm32(num_groups(half), name="conv1_norm")(x))
    y = x + FourierUnit(half, self.dtype, name="fu")(x)
    if self.enable_lfu:
      tiles = quadrants_to_channels(x[..., :half // 4])
      local = FourierUnit(half, self.dtype, name="lfu")(tiles)
      y = y + jnp.tile(local, (1, 2, 2, 1))
    return conv1x1(self.out_channels, self.dtype, "conv2", self.zero_init)(y)


def conv3x3_reflect(x: jax.Array, features: int, dtype, name: str,
                    zero_init: bool) -> jax.Array:
  """LaMa's spatial FFC path: 3x3 conv, reflect padding, no bias."""
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  return nn.Conv(features, (3, 3), padding="VALID", use_bias=False,
                 dtype=dtype, kernel_init=layers.kernel_init(zero_init),
                 name=name)(x)


class FFC(nn.Module):
  """One FFC layer on an ordinary (N, H, W, C) tensor.

  Input channels [:C_l] are local and [C_l:] global (C_g = int(C * ratio_gin));
  the output is [local | global] with int(out_channels * ratio_gout) global
  channels: local = l->l(x_l) + g->l(x_g), global = l->g(x_l) + g->g(x_g).
  Paths with an empty end are left out. `zero_init` zeroes every output
  projection so that a residual block built from it starts as the identity.
  """
  out_channels: int
  ratio_gin: float = 0.75
  ratio_gout: float = 0.75
  enable_lfu: bool = False
  zero_init: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_ffc(x.shape[-1], self.out_channels, self.ratio_gin, self.ratio_gout,
              self.enable_lfu)
    in_local, in_global = split_channels(x.shape[-1], self.ratio_gin)
    out_local, out_global = split_channels(self.out_channels, self.ratio_gout)
    x_l, x_g = x[..., :in_local], x[..., in_local:]
    spatial = lambda h, width, name: conv3x3_reflect(
        h, width, self.dtype, name, self.zero_init)
    outputs = []
    if out_local:
      paths = ([spatial(x_l, out_local, "l2l")] if in_local else []) + (
          [spatial(x_g, out_local, "g2l")] if in_global else [])
      outputs.append(sum(paths))
    if out_global:
      paths = [spatial(x_l, out_global, "l2g")] if in_local else []
      if in_global:
        paths.append(SpectralTransform(out_global, self.enable_lfu,
                                       self.zero_init, self.dtype,
                                       name="g2g")(x_g))
      outputs.append(sum(paths))
    return jnp.concatenate(outputs, axis=-1)


class FFCResBlock(layers.ResBlock):
  """guided-diffusion's ResBlock with its two 3x3 convs replaced by FFC layers.

  Same norms, noise-level embedding (added or scale-shift), dropout and skip
  as `ResBlock`. The first FFC splits its input by `ratio_gin`, both produce
  `ratio_gout` global channels; the second is zero-initialised, so the block
  starts as the identity like guided-diffusion's blocks.
  """
  ratio_gin: float = 0.75
  ratio_gout: float = 0.75
  enable_lfu: bool = False

  def conv3x3(self, x: jax.Array, name: str, zero_init: bool) -> jax.Array:
    ratio_in = self.ratio_gin if name == "in_conv" else self.ratio_gout
    return FFC(self.out_channels, ratio_in, self.ratio_gout, self.enable_lfu,
               zero_init, self.dtype, name=name)(x)
