"""ffc_ddpm: face inpainting with a DDPM whose U-Net has Fast Fourier Convolution blocks."""

from ffc_ddpm import xla_flags

xla_flags.apply()

__version__ = "0.1.0"
