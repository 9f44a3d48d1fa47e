"""The diffusion process, its training loss and its samplers.

schedules (betas, respacing) -> process (q_sample, posterior, x_0 from eps)
-> losses (masked eps-MSE) and samplers (DDPM, DDIM, RePaint as lax.scan).
Nothing here imports the network: losses and samplers take an
`apply_fn(params, x_t, noise_level, cond)`.
"""
