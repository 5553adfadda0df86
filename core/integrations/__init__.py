"""Bring your own model, take the learned solver back: one module per ecosystem.

    core.integrations.diffusers   diffusers pipelines in (a velocity field), BespokeScheduler out

Each module imports its library lazily (inside functions), so `import core` and the app's cold
start never pay for it.
"""
