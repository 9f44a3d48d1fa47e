"""ffc_ddpm: face inpainting with a DDPM whose U-Net has Fast Fourier Convolution blocks."""

__version__ = "0.1.0"
