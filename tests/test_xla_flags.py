"""The project's XLA:CPU flags: added once, never over the user's, and live."""

import os
import subprocess
import sys

from ffc_ddpm import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def test_flags_are_added_to_what_the_user_set():
  flags = xla_flags.with_cpu_flags("--xla_dump_to=/x", "0.10.2")
  assert flags.split() == ["--xla_dump_to=/x", f"{FLAG}=-individual_convolution"]
  assert xla_flags.with_cpu_flags(flags, "0.11.2") == flags  # added once


def test_a_users_own_setting_wins():
  assert xla_flags.with_cpu_flags(f"{FLAG}=", "0.10.2") == f"{FLAG}="


def test_unchecked_jaxlib_versions_get_nothing():
  assert xla_flags.with_cpu_flags("", "0.13.0") == ""


def _run(env_extra: dict) -> subprocess.CompletedProcess:
  script = ("import os, ffc_ddpm, jax, jax.numpy as jnp; "
            "x = jnp.ones((1, 8, 8, 4)); w = jnp.ones((3, 3, 4, 4)); "
            "y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
            "dimension_numbers=('NHWC', 'HWIO', 'NHWC')); "
            "print(float(y[0, 4, 4, 0])); print(os.environ['XLA_FLAGS'])")
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_extra)
  return subprocess.run([sys.executable, "-c", script], env=env,
                        capture_output=True, text=True, check=True)


def test_importing_ffc_ddpm_sets_the_flag_and_jax_accepts_it():
  # XLA aborts at start-up on a flag it does not know: a real computation
  # after the import shows the flag is accepted by the installed jaxlib.
  lines = _run({"XLA_FLAGS": ""}).stdout.splitlines()
  assert float(lines[0]) == 36.0  # a 3x3x4 window of ones
  assert (f"{FLAG}=-individual_convolution" in lines[1].split()) == (
      xla_flags.with_cpu_flags("", _jaxlib_version()) != "")


def test_the_opt_out_leaves_xla_flags_alone():
  lines = _run({"XLA_FLAGS": "", xla_flags.OPT_OUT: "0"}).stdout.splitlines()
  assert lines[1] == ""


def _jaxlib_version() -> str:
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  return importlib.metadata.version("jaxlib")
