"""Data: face images, inpainting masks and the input pipeline.

The stages, each importing only from those before it:
  images     image files -> uint8 RGB (safe conversions, named errors)
  synthetic  procedural faces, the embedded default data
  records    the packed ArrayRecord format (tools/prepare_dataset.py)
  sources    one split of a source (synthetic, folder, tfds, arrayrecord)
  masks      mask protocols; 1 = the pixel is MISSING
  augment    the paper's training augmentation
  pipeline   grain: shuffle, augment, mask, batch; evaluation batches
"""
