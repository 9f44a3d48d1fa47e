"""ffc_ddpm's U-Net train step beside guided-diffusion's PyTorch one.

  pip install -e '.[torch]'
  python tools/benchmark_torch.py --guided_diffusion=PATH --threads=2 \
      --batch=8 --steps=5 --configs=configs/demo.py,configs/celeba64.py \
      --out=benchmarks/torch_side_by_side.json

PATH is a checkout of openai/guided-diffusion (its code is imported from
there, never copied here). The same create_model kwargs (`MODEL_KWARGS`, 21.06M
parameters at 64x64; `--model_flags` JSON overrides them) build its
PyTorch UNetModel and, through `ffc_ddpm.convert`, ours with the very same
weights; the two outputs on one input are compared before any timing. One
train step is forward, MSE against a random target, backward and an Adam
update, on the same batch, with the same thread count (torch's intra-op
threads; XLA's Eigen pool through NPROC). Steps alternate, ffc_ddpm then
PyTorch, after compiling and warming up; the table gives each one's median
and the ratio ffc_ddpm / PyTorch. `--configs` adds those configs' JAX train
step (tools/benchmark.py's bench_train, at each config's own batch size).
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from ffc_ddpm import configuration, convert, models

# The network of issue 14: 21,056,387 parameters (heads do not change that).
MODEL_KWARGS = {
    "image_size": 64, "num_channels": 64, "channel_mult": "1,2,2,4",
    "num_res_blocks": 2, "attention_resolutions": "16,8", "num_heads": 4,
    "num_head_channels": -1, "use_scale_shift_norm": True,
    "resblock_updown": True, "learn_sigma": False,
}
LEARNING_RATE = 1e-4
# Largest max|ours - torch| / max|torch| accepted before timing.
TOLERANCE = 1e-3


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--guided_diffusion", required=True,
                      help="A checkout of openai/guided-diffusion.")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--threads", type=int, default=2,
                      help="CPU threads for both frameworks.")
  parser.add_argument("--steps", type=int, default=5,
                      help="Timed steps of each framework (median).")
  parser.add_argument("--model_flags", default="{}",
                      help="JSON of create_model kwargs over MODEL_KWARGS.")
  parser.add_argument("--configs", default="",
                      help="Comma-separated ffc_ddpm configs to time too.")
  parser.add_argument("--out", default="", help="Also write results here.")
  args = parser.parse_args(argv)
  if min(args.batch, args.threads, args.steps) < 1:
    parser.error("--batch, --threads and --steps must be positive")
  args.model_flags = {**MODEL_KWARGS, **json.loads(args.model_flags)}
  args.configs = [c for c in args.configs.split(",") if c]
  return args


def summary(jax_s: list[float], torch_s: list[float]) -> dict:
  """Medians of the timed steps and the ratio ffc_ddpm / PyTorch."""
  jax_median = statistics.median(jax_s)
  torch_median = statistics.median(torch_s)
  return {"jax_step_s": jax_s, "torch_step_s": torch_s,
          "jax_median_s": jax_median, "torch_median_s": torch_median,
          "ratio": jax_median / torch_median}


# ----------------------------------------------------------------- models
def torch_model(checkout: str, kwargs: dict):
  """guided-diffusion's UNetModel; zero-initialised layers get default init,
  so the output (and the comparison) is not trivially zero."""
  import torch  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(os.path.join(checkout, "guided_diffusion", "unet.py")):
    sys.exit(f"error: --guided_diffusion={checkout} is not a checkout of "
             f"openai/guided-diffusion (no guided_diffusion/unet.py)")
  sys.path.insert(0, os.path.abspath(checkout))
  # pylint: disable-next=import-outside-toplevel
  from guided_diffusion import script_util
  torch.manual_seed(0)
  model = script_util.create_model(**kwargs)
  for module in model.modules():
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and not weight.any():
      module.reset_parameters()
  return model


def flax_model(torch_net, kwargs: dict):
  """(our model, its params): the converter applied to torch's state dict."""
  model_config = convert.model_config_from_guided_diffusion(kwargs)
  state = {k: v.detach().numpy() for k, v in torch_net.state_dict().items()}
  params = convert.params_from_guided_diffusion(state, model_config)
  return models.create_model(model_config), jax.device_put(params)


def max_difference(model, params, torch_net, x, t) -> tuple[float, float]:
  """(max|ours - torch|, max|torch|) of the outputs on one input."""
  import torch  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    ref = torch_net.eval()(torch.from_numpy(x), torch.from_numpy(t)).numpy()
  torch_net.train()
  ours = jax.jit(model.apply)({"params": params}, x.transpose(0, 2, 3, 1), t)
  ours = np.asarray(ours).transpose(0, 3, 1, 2)
  return float(np.abs(ours - ref).max()), float(np.abs(ref).max())


# ------------------------------------------------------------ train steps
def jax_step(model, params, x, t, target):
  """A no-argument callable running one jitted Adam step to completion."""
  tx = optax.adam(LEARNING_RATE)
  state = [params, tx.init(params)]

  def update(params, opt_state, x, t, target):
    def loss_fn(p):
      out = model.apply({"params": p}, x, t, train=True)
      return jnp.mean((out - target) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  update = jax.jit(update, donate_argnums=(0, 1))
  x, t, target = (jnp.asarray(a) for a in (x.transpose(0, 2, 3, 1), t,
                                           target.transpose(0, 2, 3, 1)))

  def run():
    state[0], state[1], loss = update(state[0], state[1], x, t, target)
    return float(jax.block_until_ready(loss))
  return run


def torch_step(net, x, t, target):
  """A no-argument callable running one PyTorch Adam step."""
  import torch  # pylint: disable=import-outside-toplevel
  opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
  x, t, target = (torch.from_numpy(a) for a in (x, t, target))

  def run():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(net(x, t), target)
    loss.backward()
    opt.step()
    return loss.item()
  return run


def seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def side_by_side(args) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  kwargs = args.model_flags
  net = torch_model(args.guided_diffusion, kwargs)
  model, params = flax_model(net, kwargs)
  rng = np.random.default_rng(0)
  size, out_ch = kwargs["image_size"], 6 if kwargs["learn_sigma"] else 3
  x = rng.standard_normal((args.batch, 3, size, size), np.float32)
  target = rng.standard_normal((args.batch, out_ch, size, size), np.float32)
  t = rng.integers(0, 1000, args.batch)
  diff, scale = max_difference(model, params, net, x, t)
  print(f"outputs: max|ffc_ddpm - PyTorch| = {diff:.2e} "
        f"(max|PyTorch| = {scale:.3g})", flush=True)
  if diff > TOLERANCE * scale:
    sys.exit("error: the two models disagree; not timing them")

  run_jax, run_torch = jax_step(model, params, x, t, target), torch_step(
      net, x, t, target)
  compile_s = seconds(run_jax)  # compiles, then runs one step
  for _ in range(2):
    run_torch()
  run_jax()
  jax_s, torch_s = [], []
  for i in range(args.steps):
    jax_s.append(seconds(run_jax))
    torch_s.append(seconds(run_torch))
    print(f"step {i}: ffc_ddpm {jax_s[-1]:.3f} s, PyTorch {torch_s[-1]:.3f} s",
          flush=True)
  return {"model_flags": kwargs, "batch": args.batch,
          "params": sum(p.numel() for p in net.parameters()),
          "max_abs_diff": diff, "max_abs_output": scale,
          "jax_compile_s": compile_s, "torch": torch.__version__,
          **summary(jax_s, torch_s)}


def config_rows(paths: list[str], steps: int) -> list[dict]:
  """Each config's JAX train step at its own batch size."""
  rows = []
  for path in paths:
    config = configuration.load_config(path)
    row = benchmark.bench_train(config, config.train.batch_size, steps)
    rows.append({"config": path, **row, "steps_per_s": 1e3 / row["step_ms"]})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def table(result: dict) -> str:
  lines = [f"threads {result['threads']}, {result['device']}, JAX "
           f"{result['jax']}, torch {result['torch']}, load average before "
           f"{result['load_average_before']:.1f}, outputs' max abs difference "
           f"{result['max_abs_diff']:.1e}"]
  lines += ["", "| model | batch | params | median step s | steps |",
            "|---|---|---|---|---|"]
  for name, key in (("ffc_ddpm (JAX)", "jax"), ("guided-diffusion (PyTorch)",
                                                "torch")):
    lines.append(f"| {name} | {result['batch']} | {result['params']:,} | "
                 f"{result[key + '_median_s']:.3f} | "
                 f"{len(result[key + '_step_s'])} |")
  lines += ["", f"ratio ffc_ddpm / PyTorch: {result['ratio']:.2f}"]
  if result["configs"]:
    lines += ["", "| config | batch | steps/s | images/s | compile s |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['config']} | {r['batch']} | {r['steps_per_s']:.3g} | "
              f"{r['images_per_s']:.3g} | {r['compile_s']:.1f} |"
              for r in result["configs"]]
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  # XLA sizes its Eigen thread pool from NPROC when the backend starts.
  # pylint: disable-next=protected-access
  if jax._src.xla_bridge.backends_are_initialized():
    sys.exit("error: JAX started before --threads could be applied")
  os.environ["NPROC"] = str(args.threads)
  load = os.getloadavg()[0]
  if load > 0.5:
    print(f"warning: load average {load:.1f} before starting; the machine is "
          f"not idle, so the timings are not comparable", flush=True)
  result = {**benchmark.device_info(), "threads": args.threads,
            "load_average_before": load,
            **side_by_side(args)}
  result["configs"] = config_rows(args.configs, args.steps)
  print(table(result))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main(sys.argv[1:])
