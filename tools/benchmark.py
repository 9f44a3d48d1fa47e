"""Speed and memory of training and sampling, written to benchmarks/.

  python tools/benchmark.py --layouts=paper,repaint --sizes=64,128,256 \
      --train_batch_sizes=8,32 --samplers=ddim50,ddim100,ddpm,repaint250 \
      --sample_batch_sizes=8,32 --out=benchmarks/speed

Layouts: `paper` is configs/celebahq.py (FFC U-Net, 7 input channels);
`paper_noffc` the same without FFC; `repaint` is RePaint's CelebA-HQ 256
network (552.8M parameters at 256; trained here as a conditional model
without learned sigma, sampled as RePaint's unconditional model).

Train rows: images/s, step time, compile time, XLA's FLOPs per step, MFU
(on accelerators with a known peak), peak device memory (host RSS on CPU).
Sample rows: images per minute of the whole sampler (DDIM-50, DDIM-100, DDPM
over all T steps, RePaint-250 with 10 x 10 jumps), and the sampling loop's
overhead over the network's own forward passes. Each row records device,
JAX version and this command. Results go to OUT.json and OUT.md.
"""

import json
import os
import platform
import resource
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ffc_ddpm import configuration, convert, inference, models, parallel, train
from ffc_ddpm.diffusion import process, samplers


def define_flags() -> None:
  """The command's flags, defined only when it runs as a program, so that
  other tools can import its functions beside their own flags."""
  global _LAYOUTS, _SIZES, _TRAIN_BATCHES, _SAMPLERS, _SAMPLE_BATCHES
  global _DTYPE, _REMAT, _STEPS, _OUT
  _LAYOUTS = flags.DEFINE_list("layouts", ["paper"],
                               "paper, paper_noffc, repaint")
  _SIZES = flags.DEFINE_list("sizes", ["64"], "Image sizes.")
  _TRAIN_BATCHES = flags.DEFINE_list("train_batch_sizes", ["8"],
                                     "Global train batch sizes ('' = none).")
  _SAMPLERS = flags.DEFINE_list(
      "samplers", ["ddim50"],
      "ddimN, ddpm (all T steps), repaintN ('' = none).")
  _SAMPLE_BATCHES = flags.DEFINE_list("sample_batch_sizes", ["8"],
                                      "Sampling batch sizes.")
  _DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"],
                             "Compute dtype (default: bfloat16 on "
                             "accelerators, float32 on CPU).")
  _REMAT = flags.DEFINE_bool("remat", False, "Rematerialise each block.")
  _STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps per row.")
  _OUT = flags.DEFINE_string("out", "benchmarks/speed", "Output path stem.")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense bf16 peak FLOP/s by device kind (vendor figures), for MFU.
PEAK_BF16 = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
    "TPU v5p": 459e12, "TPU v6 lite": 918e12,
}
REPAINT_FLAGS = {
    "num_channels": 256, "num_res_blocks": 2, "attention_resolutions":
    "32,16,8", "num_head_channels": 64, "learn_sigma": True,
    "resblock_updown": True, "use_scale_shift_norm": True,
    "diffusion_steps": 1000, "noise_schedule": "linear",
}


# ---------------------------------------------------------------- configs
def layout_config(layout: str, size: int, dtype: str, remat: bool):
  """The config of one benchmarked network at one image size."""
  base = configuration.load_config(os.path.join(ROOT, "configs", "celebahq.py"))
  base.data.source, base.data.path = "synthetic", ""
  if layout == "repaint":
    config = convert.config_from_guided_diffusion(
        base, {**REPAINT_FLAGS, "image_size": size})
  else:
    config = base
    config.data.image_size = size
    config.model.ffc.enabled = layout == "paper"
  config.model.dtype, config.model.remat = dtype, remat
  return config


def trainable(config):
  """The same network as a conditional eps model, which we can train."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.learn_sigma = False
  config.model.in_channels = 7
  config.diffusion.conditioning = "concat"
  config.diffusion.loss_region = "hole"
  return config


# ------------------------------------------------------------------ rows
def device_info() -> dict:
  d = jax.devices()[0]
  return {"device": f"{jax.device_count()}x {d.device_kind}",
          "platform": d.platform, "jax": jax.__version__,
          "host": platform.processor() or platform.machine(),
          "command": "python " + " ".join(sys.argv)}


def peak_memory_gib() -> float:
  """Peak device memory, or the process's peak RSS on CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_flops(dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  for name, flops in PEAK_BF16.items():
    if name in kind:
      return flops * jax.device_count() / (1 if dtype == "bfloat16" else 2)
  return None


def random_batch(batch: int, size: int, mesh):
  rng = np.random.default_rng(0)
  mask = np.zeros((batch, size, size, 1), np.float32)
  mask[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
  return parallel.global_batch(
      {"image": rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
       "mask": mask}, mesh)


def bench_train(config, batch: int, steps: int) -> dict:
  """One row: the sharded train step on random data."""
  config.train.batch_size = batch
  mesh = parallel.create_mesh(config.train.model_axis_size)
  model = models.create_model(config.model)
  tx = train.create_optimizer(config.train)
  state = train.create_train_state(config, model, tx, mesh)
  step = train.jit_train_step(
      train.make_train_step(config, model, process.from_config(config.diffusion),
                            tx),
      jax.tree.map(lambda x: x.sharding, state), mesh)
  data = random_batch(batch, config.data.image_size, mesh)
  start = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  step_s = (time.perf_counter() - start) / steps
  cost = compiled.cost_analysis()
  flops = (cost[0] if isinstance(cost, list) else cost).get("flops", 0.0)
  peak = peak_flops(config.model.dtype)
  return {
      "kind": "train", "batch": batch, "step_ms": 1e3 * step_s,
      "images_per_s": batch / step_s, "compile_s": compile_s,
      "tflop_per_step": flops / 1e12,
      "mfu": flops / step_s / peak if peak else None,
      "peak_memory_gib": peak_memory_gib(),
      "params_m": sum(x.size for x in jax.tree.leaves(state.params)) / 1e6,
  }


def sampler_settings(name: str, config) -> dict:
  """ddimN / ddpm / repaintN -> config.eval fields."""
  if name == "ddpm":
    return {"sampler": "ddpm", "num_steps": config.diffusion.num_steps}
  for prefix in ("ddim", "repaint"):
    if name.startswith(prefix) and name[len(prefix):].isdigit():
      return {"sampler": prefix, "num_steps": int(name[len(prefix):]),
              "jump_length": 10, "jump_n_sample": 10}
  raise ValueError(f"--samplers: {name!r} is not ddimN, ddpm or repaintN")


def bench_sample(config, name: str, batch: int) -> dict:
  """One row: the whole sampler, and the network's share of its time."""
  settings = sampler_settings(name, config)
  if settings["sampler"] == "repaint":
    config.diffusion.conditioning, config.model.in_channels = "none", 3
  config.eval.update(settings)
  size = config.data.image_size
  mesh = parallel.create_mesh()
  model = models.create_model(config.model)
  params = jax.jit(lambda: models.init_params(model, config.model,
                                              jax.random.key(0)),
                   out_shardings=parallel.replicated(mesh))()
  apply = inference.inference_apply(model)
  sampler = samplers.create_sampler(config, apply, num_chunks=1)
  data = random_batch(batch, size, mesh)
  keys = samplers.example_keys(jax.random.key(0), jnp.arange(batch))
  run = lambda: sampler(params, data["image"], data["mask"], keys)
  jax.block_until_ready(run())  # compile
  start = time.perf_counter()
  jax.block_until_ready(run())
  total_s = time.perf_counter() - start

  cond = (jnp.concatenate([data["image"], data["mask"]], -1)
          if config.diffusion.conditioning == "concat" else None)
  forward = jax.jit(apply)
  level = jnp.full((batch,), 0.5 if config.model.noise_conditioning == "abar"
                   else 10.0)
  jax.block_until_ready(forward(params, data["image"], level, cond))
  reps = 5
  start = time.perf_counter()
  for _ in range(reps):
    out = forward(params, data["image"], level, cond)
  jax.block_until_ready(out)
  forward_s = (time.perf_counter() - start) / reps
  network_s = forward_s * sampler.total_steps
  return {"kind": "sample", "sampler": name, "batch": batch,
          "network_evaluations": sampler.total_steps, "seconds": total_s,
          "images_per_min": 60 * batch / total_s,
          "loop_overhead": total_s / network_s - 1,
          "peak_memory_gib": peak_memory_gib()}


# ----------------------------------------------------------------- output
def markdown(rows: list[dict]) -> str:
  out = []
  for kind, cols in (
      ("train", ["layout", "size", "dtype", "batch", "params_m", "images_per_s",
                 "step_ms", "compile_s", "tflop_per_step", "mfu",
                 "peak_memory_gib"]),
      ("sample", ["layout", "size", "dtype", "sampler", "batch",
                  "network_evaluations", "images_per_min", "seconds",
                  "loop_overhead", "peak_memory_gib"])):
    sel = [r for r in rows if r["kind"] == kind]
    if not sel:
      continue
    out += [f"| {' | '.join(cols)} |", "|" + "---|" * len(cols)]
    for r in sel:
      out.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
    out.append("")
  info = rows[0]
  out.append(f"Device: {info['device']} ({info['platform']}, host "
             f"{info['host']}), JAX {info['jax']}.  ")
  out.append(f"Command: `{info['command']}`")
  return "\n".join(out) + "\n"


def _cell(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
  return str(v)


def main(argv):
  del argv
  on_cpu = jax.devices()[0].platform == "cpu"
  dtype = _DTYPE.value or ("float32" if on_cpu else "bfloat16")
  info = device_info()
  rows = []
  for layout in _LAYOUTS.value:
    for size in map(int, _SIZES.value):
      head = {**info, "layout": layout, "size": size, "dtype": dtype,
              "remat": _REMAT.value}
      for batch in filter(None, _TRAIN_BATCHES.value):
        config = trainable(layout_config(layout, size, dtype, _REMAT.value))
        rows.append({**head, **bench_train(config, int(batch), _STEPS.value)})
        print(json.dumps(rows[-1]), flush=True)
      for name in filter(None, _SAMPLERS.value):
        for batch in filter(None, _SAMPLE_BATCHES.value):
          config = layout_config(layout, size, dtype, _REMAT.value)
          if layout != "repaint":
            config = trainable(config)
          rows.append({**head, **bench_sample(config, name, int(batch))})
          print(json.dumps(rows[-1]), flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value + ".json", "w") as f:
    json.dump(rows, f, indent=1)
  with open(_OUT.value + ".md", "w") as f:
    f.write(markdown(rows))
  print(markdown(rows))


if __name__ == "__main__":
  define_flags()
  app.run(main)
