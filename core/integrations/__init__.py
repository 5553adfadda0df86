"""Bring your own model, take the learned solver back: one module per ecosystem.

- core.integrations.scheme: a learned solver (Bespoke RK1/RK2, BNS) as its LinearScheme.
- core.integrations.diffusers: diffusers pipelines in (a velocity field), BespokeScheduler out.
- core.integrations.flow_matching: facebookresearch flow_matching models in, a `Solver` out.
- core.integrations.k_diffusion: a k-diffusion-style sampler and its sigmas.

Nothing here is imported by `import core`; each module imports its library lazily, so `import
core` and the app's cold start never pay for it.
"""
