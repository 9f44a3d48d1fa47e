"""guided-diffusion's UNetModel in plain numpy: NCHW, PyTorch names and layouts.

An independent reference for the tests, written from guided-diffusion's
`unet.py` / `script_util.create_model` without touching ffc_ddpm: it lists the
state-dict keys and shapes `create_model(**kwargs)` makes, fills them with
random values, and runs the forward pass in float64. test_convert.py checks it
against PyTorch's own outputs (the fixtures in ../shared/reference), so it can
stand in for PyTorch on layouts the fixtures do not cover.
"""

import math

import numpy as np

DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4),
                128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
ARGS = dict(channel_mult="", learn_sigma=False, class_cond=False,
            attention_resolutions="16", num_heads=1, num_head_channels=-1,
            num_heads_upsample=-1, use_scale_shift_norm=False,
            resblock_updown=False, use_new_attention_order=False)


def resolve(kwargs):
  """create_model's keyword arguments, defaults filled, strings parsed."""
  kw = {**ARGS, **kwargs}
  mult = kw["channel_mult"]
  kw["channel_mult"] = (DEFAULT_MULT[kw["image_size"]] if mult == "" else
                        tuple(int(m) for m in mult.split(",")))
  kw["attention_ds"] = {kw["image_size"] // int(r)
                        for r in kw["attention_resolutions"].split(",")}
  if kw["num_heads_upsample"] == -1:
    kw["num_heads_upsample"] = kw["num_heads"]
  return kw


def heads(kw, channels, upsample):
  if kw["num_head_channels"] != -1:
    return channels // kw["num_head_channels"]
  return kw["num_heads_upsample"] if upsample else kw["num_heads"]


def layout(kw):
  """Blocks of (kind, in_channels, out_channels, heads), as UNetModel's."""
  mc = kw["num_channels"]
  ch = int(kw["channel_mult"][0] * mc)
  inputs, chans, ds = [[("conv", 3, ch, 0)]], [ch], 1
  for level, mult in enumerate(kw["channel_mult"]):
    for _ in range(kw["num_res_blocks"]):
      block = [("res", ch, int(mult * mc), 0)]
      ch = int(mult * mc)
      if ds in kw["attention_ds"]:
        block.append(("attn", ch, ch, heads(kw, ch, False)))
      inputs.append(block)
      chans.append(ch)
    if level != len(kw["channel_mult"]) - 1:
      inputs.append([("down", ch, ch, 0)])
      chans.append(ch)
      ds *= 2
  middle = [("res", ch, ch, 0), ("attn", ch, ch, heads(kw, ch, False)),
            ("res", ch, ch, 0)]
  outputs = []
  for level, mult in list(enumerate(kw["channel_mult"]))[::-1]:
    for i in range(kw["num_res_blocks"] + 1):
      block = [("res", ch + chans.pop(), int(mc * mult), 0)]
      ch = int(mc * mult)
      if ds in kw["attention_ds"]:
        block.append(("attn", ch, ch, heads(kw, ch, True)))
      if level and i == kw["num_res_blocks"]:
        block.append(("up", ch, ch, 0))
        ds //= 2
      outputs.append(block)
  return inputs, middle, outputs


def named_layers(kw):
  """(torch prefix, layer) for every layer, in forward order per section."""
  inputs, middle, outputs = layout(kw)
  for name, blocks in (("input_blocks", inputs), ("output_blocks", outputs)):
    for i, block in enumerate(blocks):
      for j, layer in enumerate(block):
        yield f"{name}.{i}.{j}", layer
  for j, layer in enumerate(middle):
    yield f"middle_block.{j}", layer


def layer_shapes(kw, kind, cin, cout):
  """{suffix: shape} of one layer's parameters."""
  emb = 4 * kw["num_channels"]
  updown = kw["resblock_updown"] and kind in ("down", "up")
  if kind == "res" or updown:
    shapes = {"in_layers.0": [(cin,)], "in_layers.2": [(cout, cin, 3, 3)],
              "emb_layers.1": [(cout * (1 + kw["use_scale_shift_norm"]), emb)],
              "out_layers.0": [(cout,)], "out_layers.3": [(cout, cout, 3, 3)]}
    if cin != cout:
      shapes["skip_connection"] = [(cout, cin, 1, 1)]
  elif kind == "attn":
    shapes = {"norm": [(cin,)], "qkv": [(3 * cin, cin, 1)],
              "proj_out": [(cin, cin, 1)]}
  else:  # conv, down (op), up (conv)
    name = {"conv": "", "down": "op", "up": "conv"}[kind]
    shapes = {name: [(cout, cin, 3, 3)]}
  out = {}
  for suffix, (shape,) in shapes.items():
    prefix = suffix + "." if suffix else ""
    out[prefix + "weight"] = shape
    out[prefix + "bias"] = (shape[0],)
  return out


def state_shapes(kwargs):
  """{key: shape} of create_model(**kwargs).state_dict()."""
  kw = resolve(kwargs)
  mc, emb = kw["num_channels"], 4 * kw["num_channels"]
  ch0 = int(kw["channel_mult"][0] * mc)
  out_ch = 6 if kw["learn_sigma"] else 3
  shapes = {"time_embed.0.weight": (emb, mc), "time_embed.0.bias": (emb,),
            "time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,)}
  if kw["class_cond"]:
    shapes["label_emb.weight"] = (1000, emb)
  for prefix, (kind, cin, cout, _) in named_layers(kw):
    for suffix, shape in layer_shapes(kw, kind, cin, cout).items():
      shapes[f"{prefix}.{suffix}"] = shape
  shapes.update({"out.0.weight": (ch0,), "out.0.bias": (ch0,),
                 "out.2.weight": (out_ch, ch0, 3, 3), "out.2.bias": (out_ch,)})
  return shapes


def random_state_dict(kwargs, seed):
  """Random float32 weights; norms near 1; every layer shows in the output."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in state_shapes(kwargs).items():
    if key.endswith("weight") and len(shape) == 1:
      value = 1 + 0.2 * rng.standard_normal(shape)
    elif len(shape) == 1:
      value = 0.2 * rng.standard_normal(shape)
    else:
      fan_in = 1 if key.startswith("label_emb") else math.prod(shape[1:])
      value = rng.standard_normal(shape) / math.sqrt(fan_in)
    state[key] = value.astype(np.float32)
  return state


# ------------------------------------------------------------ forward pass
def conv2d(x, w, b, stride=1):
  pad = w.shape[-1] // 2
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  win = np.lib.stride_tricks.sliding_window_view(x, w.shape[-2:], (2, 3))
  win = win[:, :, ::stride, ::stride]
  out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (n, h, w, o)
  return out.transpose(0, 3, 1, 2) + b[None, :, None, None]


def group_norm(x, w, b, groups=32, eps=1e-5):
  n, c = x.shape[:2]
  g = x.reshape(n, groups, -1)
  g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
  shape = (1, c) + (1,) * (x.ndim - 2)
  return g.reshape(x.shape) * w.reshape(shape) + b.reshape(shape)


def silu(x):
  return x / (1 + np.exp(-x))


def resize(x, kind):
  if kind == "up":
    return x.repeat(2, axis=2).repeat(2, axis=3)
  n, c, h, w = x.shape
  return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def res_block(p, x, emb, kw, resample=None):
  h = silu(group_norm(x, p["in_layers.0.weight"], p["in_layers.0.bias"]))
  if resample:
    h, x = resize(h, resample), resize(x, resample)
  h = conv2d(h, p["in_layers.2.weight"], p["in_layers.2.bias"])
  e = silu(emb) @ p["emb_layers.1.weight"].T + p["emb_layers.1.bias"]
  e = e[:, :, None, None]
  norm = lambda v: group_norm(v, p["out_layers.0.weight"],
                              p["out_layers.0.bias"])
  if kw["use_scale_shift_norm"]:
    scale, shift = np.split(e, 2, axis=1)
    h = norm(h) * (1 + scale) + shift
  else:
    h = norm(h + e)
  h = conv2d(silu(h), p["out_layers.3.weight"], p["out_layers.3.bias"])
  if "skip_connection.weight" in p:
    x = conv2d(x, p["skip_connection.weight"], p["skip_connection.bias"])
  return x + h


def attention(p, x, num_heads, new_order):
  n, c, hh, ww = x.shape
  flat = x.reshape(n, c, -1)
  h = group_norm(flat, p["norm.weight"], p["norm.bias"])
  qkv = np.einsum("oc,nct->not", p["qkv.weight"][:, :, 0], h)
  qkv = qkv + p["qkv.bias"][None, :, None]
  ch = c // num_heads
  if new_order:  # [q | k | v], each over all heads
    q, k, v = (a.reshape(n * num_heads, ch, -1) for a in np.split(qkv, 3, 1))
  else:  # per head [q | k | v]
    q, k, v = np.split(qkv.reshape(n * num_heads, 3 * ch, -1), 3, axis=1)
  logits = np.einsum("bct,bcs->bts", q, k) / math.sqrt(ch)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  a = np.einsum("bts,bcs->bct", weights, v).reshape(n, c, -1)
  a = np.einsum("oc,nct->not", p["proj_out.weight"][:, :, 0], a)
  a = a + p["proj_out.bias"][None, :, None]
  return (flat + a).reshape(x.shape)


def apply_layer(state, prefix, layer, h, emb, kw):
  p = {k[len(prefix) + 1:]: v for k, v in state.items()
       if k.startswith(prefix + ".")}
  kind, _, _, num_heads = layer
  if kind == "res":
    return res_block(p, h, emb, kw)
  if kind == "attn":
    return attention(p, h, num_heads, kw["use_new_attention_order"])
  if kind in ("down", "up") and kw["resblock_updown"]:
    return res_block(p, h, emb, kw, resample=kind)
  if kind == "up":
    return conv2d(resize(h, "up"), p["conv.weight"], p["conv.bias"])
  if kind == "down":
    return conv2d(h, p["op.weight"], p["op.bias"], stride=2)
  return conv2d(h, p["weight"], p["bias"])


def forward(state, kwargs, x, t, y=None):
  """UNetModel.forward(x, t, y) in float64; x and the result are NCHW."""
  kw = resolve(kwargs)
  f64 = {k: v.astype(np.float64) for k, v in state.items()}
  half = kw["num_channels"] // 2
  freqs = np.exp(-math.log(10000) * np.arange(half) / half)
  args = np.asarray(t, np.float64)[:, None] * freqs[None]
  emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
  emb = silu(emb @ f64["time_embed.0.weight"].T + f64["time_embed.0.bias"])
  emb = emb @ f64["time_embed.2.weight"].T + f64["time_embed.2.bias"]
  if y is not None:
    emb = emb + f64["label_emb.weight"][y]
  inputs, middle, outputs = layout(kw)
  h, skips = np.asarray(x, np.float64), []
  for i, block in enumerate(inputs):
    for j, layer in enumerate(block):
      h = apply_layer(f64, f"input_blocks.{i}.{j}", layer, h, emb, kw)
    skips.append(h)
  for j, layer in enumerate(middle):
    h = apply_layer(f64, f"middle_block.{j}", layer, h, emb, kw)
  for i, block in enumerate(outputs):
    h = np.concatenate([h, skips.pop()], axis=1)
    for j, layer in enumerate(block):
      h = apply_layer(f64, f"output_blocks.{i}.{j}", layer, h, emb, kw)
  h = silu(group_norm(h, f64["out.0.weight"], f64["out.0.bias"]))
  return conv2d(h, f64["out.2.weight"], f64["out.2.bias"])
