"""Bring your own model, take the learned solver back: one module per ecosystem.

Nothing here is imported by `import core`; each module imports its library (flow_matching,
...) only when it is itself imported, so the app's cold start never pays for them.
- core.integrations.scheme: a learned solver (Bespoke RK1/RK2, BNS) as its LinearScheme.
- core.integrations.flow_matching: facebookresearch flow_matching models in, a `Solver` out.
- core.integrations.k_diffusion: a k-diffusion-style sampler and its sigmas.
"""
