"""The denoising network: guided-diffusion's U-Net with FFC blocks (linen)."""

from ffc_ddpm.models.unet import UNet, create_model, init_params

__all__ = ["UNet", "create_model", "init_params"]
