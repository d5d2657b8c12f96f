"""python -m fastops.bench [--ops relu,gelu] [--families activations] [--quick] [--device cuda|cpu]

Times fastops, torch eager and torch.compile in one process, appends rows to benchmarks/results/<device>.csv,
prints the ratio table and writes a PNG plot to benchmarks/plots/.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

import fastops

from . import FAMILIES, family_cases
from .core import append_csv, device_label, device_slug, measure_ceilings, run_cases
from .report import plot, table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastops.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma list of op families")
    parser.add_argument("--ops", default="", help="comma list of op names (CSV 'op' column) to keep")
    parser.add_argument("--providers", default="", help="comma list (fastops,torch,compile); default all")
    parser.add_argument("--quick", action="store_true", help="small sizes and short timing: a smoke run")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"),
                        help="folder for <device>.csv")
    parser.add_argument("--plots", default=os.path.join(REPO, "benchmarks", "plots"), help="folder for PNG plots")
    parser.add_argument("--no-csv", action="store_true", help="print only; do not append to the CSV")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not fastops.has_cuda_kernels():
        print("fastops was built without CUDA kernels; rebuild on a machine with nvcc and CUDA torch", file=sys.stderr)
        return 2
    wanted_ops = {o for o in args.ops.split(",") if o}
    cases = []
    for family in (f for f in args.families.split(",") if f):
        cases += [c for c in family_cases(family, args.device, args.quick) if not wanted_ops or c.op in wanted_ops]
    if not cases:
        print("no benchmark case matches", file=sys.stderr)
        return 2

    ceilings = measure_ceilings(args.device)
    providers = [p for p in args.providers.split(",") if p] or None
    results = run_cases(cases, args.device, quick=args.quick, providers=providers,
                        progress=not args.no_progress)

    slug = device_slug(args.device) + ("-quick" if args.quick else "")
    print(f"\n{device_label(args.device)}, torch {torch.__version__}; measured copy ceiling "
          f"{ceilings['GB/s']:.0f} GB/s\n")
    print(table(results, ceilings))
    if not args.no_csv:
        path = os.path.join(args.results, f"{slug}.csv")
        append_csv(results, path, args.device)
        print(f"\nrows appended to {os.path.relpath(path)}")
    png = plot(results, os.path.join(args.plots, f"{slug}.png"), f"fastops speed-up, {device_label(args.device)}")
    if png:
        print(f"plot written to {os.path.relpath(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
