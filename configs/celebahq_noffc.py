"""The paper's ablation: the same DDPM on CelebA-HQ 256 without FFC blocks."""

from configs import celebahq


def get_config():
  config = celebahq.get_config()
  config.model.ffc.enabled = False
  return config
