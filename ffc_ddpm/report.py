"""The evaluation's report: results.json in the shape the README documents,
and results.md, the paper's table, from the means of `scoring.summarise`.
"""

from ffc_ddpm import eval_records

METHOD_TITLES = {"mean": "mean fill", "telea": "Telea (OpenCV)",
                 "biharmonic": "biharmonic (scikit-image)"}


def results_json(table: dict, config, step: int, weights: str,
                 grids: dict[str, str]) -> dict:
  """results.json: the documented shape, plus the sampler, the checkpoint
  item and the grid file of each mask."""
  masks, ec = tuple(config.eval.masks), config.eval
  scores = lambda e: {k: v for k, v in e.items() if k != "num_images"}
  # The mean of K, or the first sample itself when K = 1.
  model, mean = eval_records.MODEL, eval_records.model_methods(config)[-1]
  return {
      "step": int(step),
      "num_images": min(table[model, m]["num_images"] for m in masks),
      "image_size": int(config.data.image_size),
      "masks": {m: {**table[model, m], eval_records.MEAN_OF_K: {
          "k": int(ec.num_samples), **scores(table[mean, m])}}
                for m in masks},
      "baselines": {b: {m: scores(table[b, m]) for m in masks}
                    for b in ec.baselines},
      "sampler": {"name": ec.sampler, "num_steps": int(ec.num_steps),
                  "timestep_spacing": ec.timestep_spacing,
                  "eta": float(ec.eta)},
      "weights": weights,
      "model": _model_title(config),
      "grids": grids,
  }


def _model_title(config) -> str:
  ffc = "with" if config.model.ffc.enabled else "without"
  return f"DDPM {ffc} FFC"


_COLUMNS = (("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
            ("lpips", "LPIPS", "{:.3f}"), ("fid", "FID", "{:.2f}"))


def results_markdown(results: dict) -> str:
  """The paper's table: one row per method, each metric per mask."""
  masks = list(results["masks"])
  first = results["masks"][masks[0]]
  shown = [c for c in _COLUMNS if c[0] in first]
  head = ["method"] + [f"{m} {title}" for m in masks for _, title, _ in
                       shown]
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  rows = {METHOD_TITLES.get(b, b): per_mask
          for b, per_mask in results["baselines"].items()}
  rows[f"{results['model']} (this model, step {results['step']})"] = (
      results["masks"])
  of_k = eval_records.MEAN_OF_K
  k = results["masks"][masks[0]][of_k]["k"]
  if k > 1:
    rows[f"{results['model']}, mean of {k} samples"] = {
        m: entry[of_k] for m, entry in results["masks"].items()}
  for name, per_mask in rows.items():
    cells = [fmt.format(per_mask[m][key]) if key in per_mask[m] else "-"
             for m in masks for key, _, fmt in shown]
    lines.append("| " + " | ".join([name] + cells) + " |")
  s = results["sampler"]
  lines += ["", f"{results['num_images']} images at {results['image_size']}x"
            f"{results['image_size']}, {s['name']} sampling with "
            f"{s['num_steps']} {s.get('timestep_spacing', 'uniform')} steps, "
            f"{results['weights']}. PSNR (dB, MAX = "
            "255) and SSIM on 8-bit images, higher is better"
            + ("; LPIPS and FID lower is better" if len(shown) > 2 else "")
            + "."]
  means = ["mean of K", "uncertainty"] if k > 1 else []
  columns = " | ".join(["masked input", "one sample"] + means + [
      METHOD_TITLES.get(b, b) for b in results["baselines"]] + ["original"])
  for m, grid in results["grids"].items():
    lines += ["", f"![{m}]({grid})", "", f"{m}: {columns}"]
  return "\n".join(lines) + "\n"


