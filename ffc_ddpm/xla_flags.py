"""XLA flags the project sets for the CPU, each one measured.

On XLA:CPU (jaxlib 0.10 and 0.11) convolutions run in YNNPACK by default;
Eigen's convolutions train our U-Nets 1.6x faster on a 2-core x86 CPU
(benchmarks/speed.md: YNNPACK computes the weight gradients, 34% of the
step, at about 10 GFLOP/s). So the YNNPACK library keeps dots, reductions and
elementwise fusions, and hands convolutions back to Eigen.

Applied when ffc_ddpm is imported, before JAX starts a backend (a backend
already started keeps its flags). A flag the user sets in XLA_FLAGS wins;
FFC_DDPM_XLA_FLAGS=0 turns the project's flags off. Only jaxlib versions on
which the flags were checked get them: XLA stops at start-up on a flag it
does not know. GPU and TPU backends ignore XLA:CPU flags.
"""

import importlib.metadata
import os

CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
CHECKED_JAXLIB = ("0.10.", "0.11.")
OPT_OUT = "FFC_DDPM_XLA_FLAGS"


def with_cpu_flags(xla_flags: str, jaxlib_version: str) -> str:
  """`xla_flags` plus each of CPU_FLAGS that it does not set already."""
  if not jaxlib_version.startswith(CHECKED_JAXLIB):
    return xla_flags
  added = [f"--{name}={value}" for name, value in CPU_FLAGS.items()
           if f"--{name}=" not in xla_flags]
  return " ".join([xla_flags] + added).strip()


def apply() -> None:
  """Adds the project's CPU flags to the environment's XLA_FLAGS."""
  if os.environ.get(OPT_OUT, "1") == "0":
    return
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return
  os.environ["XLA_FLAGS"] = with_cpu_flags(os.environ.get("XLA_FLAGS", ""),
                                           version)
