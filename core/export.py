"""`python -m core export`: a solver out of this library, into the sampler people already use.

    --format diffusers   a scheduler folder for core.integrations.diffusers.BespokeScheduler
                         (the model must be a diffusers pipeline folder)
    --format sigmas      the time grid as JSON: t, sigmas, timesteps, how to use them with a stock
                         diffusers scheduler (the flow-shift trap handled) or ComfyUI's manual
                         sigmas, and the note that a grid alone is not the learned solver

Kept out of core/cli.py: `add_parser(sub)` registers the command there.
"""
from __future__ import annotations

import json
from pathlib import Path

FORMATS = ("diffusers", "sigmas")


def cmd_export(args) -> None:
    from .cli import UserError, _device, _get_solver, _load_field
    from .integrations import diffusers as dif
    device = _device(args.device)
    field = _load_field(args, device)
    solver = _get_solver(args.solver, field, device)
    learned = hasattr(solver, "decode")
    if not learned and args.nfe is None:
        raise UserError(f"--nfe is needed for the built-in solver {args.solver!r}")
    if args.nfe is not None:
        solver.check_nfe(args.nfe)
    nfe = args.nfe if args.nfe is not None else getattr(solver, "nfe", None)
    out = Path(args.out)
    if args.format == "diffusers":
        if out.exists() and not out.is_dir():
            raise UserError(f"--out must be a folder for --format diffusers; {args.out!r} is a file")
        s = dif.export_scheduler(field, solver, out, nfe=nfe)
        print(f"wrote {out / s.config_name}: BespokeScheduler running {s.config.solver} (NFE {s.nfe}); load it with "
              f"core.integrations.diffusers.BespokeScheduler.from_pretrained({str(out)!r})")
    else:
        if out.suffix != ".json":
            raise UserError(f"--out must end in .json for --format sigmas, got {args.out!r}")
        grid = dif.export_sigmas(field, solver, nfe=nfe)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(grid, indent=2) + "\n")
        print(f"wrote {out}: the time grid of {grid['solver']} ({len(grid['t'])} points). {grid['note']}")


def add_parser(sub, model_options) -> None:
    p = sub.add_parser("export", help="export a solver as a diffusers scheduler folder or a sigma grid",
                       description="Export a learned (or built-in) solver for use outside this library: "
                       "--format diffusers writes a scheduler folder (BespokeScheduler) for a diffusers "
                       "pipeline folder given as --model; --format sigmas writes the time grid as JSON.")
    model_options(p)
    p.add_argument("--solver", required=True, help="learned solver file, or a built-in name with --nfe")
    p.add_argument("--nfe", type=int, default=None, help="network evaluations (built-in solvers; checked for learned)")
    p.add_argument("--format", required=True, choices=FORMATS, help="diffusers (scheduler folder) or sigmas (JSON)")
    p.add_argument("--out", required=True, help="output folder (diffusers) or .json file (sigmas)")
    p.set_defaults(func=cmd_export)
