"""tools/benchmark_torch.py's pure parts (the run itself needs torch and a
guided-diffusion checkout, so it is not run here)."""

import pathlib
import sys

import pytest

from ffc_ddpm import convert

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
# pylint: disable-next=g-import-not-at-top,wrong-import-position
import benchmark_torch as tool


def test_default_network_is_the_issues():
  """The defaults are create_model kwargs that our converter accepts."""
  config = convert.model_config_from_guided_diffusion(tool.MODEL_KWARGS)
  assert config.image_size == 64 and config.model_channels == 64
  assert tuple(config.channel_mult) == (1, 2, 2, 4)
  assert tuple(config.attention_resolutions) == (16, 8)


def test_parse_args_merges_model_flags_and_splits_configs():
  args = tool.parse_args([
      "--guided_diffusion=gd", "--batch=2", "--threads=1",
      '--model_flags={"num_channels": 32}',
      "--configs=configs/demo.py,,configs/celeba64.py"])
  assert (args.batch, args.threads, args.steps) == (2, 1, 5)
  assert args.model_flags == {**tool.MODEL_KWARGS, "num_channels": 32}
  assert args.configs == ["configs/demo.py", "configs/celeba64.py"]


@pytest.mark.parametrize("argv", [[], ["--guided_diffusion=gd", "--steps=0"]])
def test_parse_args_refuses(argv):
  with pytest.raises(SystemExit):
    tool.parse_args(argv)


def test_summary_takes_medians_and_their_ratio():
  result = tool.summary([3.0, 1.0, 2.0], [1.0, 4.0, 0.5])
  assert (result["jax_median_s"], result["torch_median_s"]) == (2.0, 1.0)
  assert result["ratio"] == 2.0
