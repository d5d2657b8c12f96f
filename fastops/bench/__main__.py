"""python -m fastops.bench [--ops relu,gelu] [--families activations] [--quick] [--device cuda|cpu] [--headline]

Times fastops, torch eager and torch.compile in one process, appends rows to benchmarks/results/<device>.csv
(each row as soon as it is measured, beside a 'copy' row with the bandwidth ceiling of the same run), prints the
ratio table and writes a PNG plot to benchmarks/plots/. --headline times only shared/DESIGN.md's headline rows on
the GPU, those with a target first (fastops.bench.headline); --cpu-train-step times fastops' headline training
step on the CPU for the GPU-vs-CPU comparison. SIGTERM (a time box) ends the run early with what it measured.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

import fastops

from . import FAMILIES, family_cases
from .core import append_csv, device_label, device_slug, measure_ceilings, plan_jobs, run_jobs
from .report import plot, table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stop(signum, frame):
    raise KeyboardInterrupt


# glibc's malloc hands every freed block of 32 MiB or more back to the kernel and maps fresh pages for the next one, so
# a large output costs a page fault per 4 KiB on its first writes: the same for every provider (each allocates its
# output), and on the 2-core VMs of the README's CPU tables 1 to 7 us a fault, more than the kernels themselves
# (gelu on 2^24 float32 elements: 21 ms a call with the faults, 3.5 ms without). It also made the rows swing with
# which provider's blocks glibc happened to reuse: swiglu's float32 forward+backward measured 0.51x torch with the
# faults, 2.38x without. So the bench runs with freed memory kept for reuse, as glibc's tunables allow, and times the
# ops. Set MALLOC_MMAP_THRESHOLD_ yourself (33554432 is glibc's ceiling) to time them with the faults.
REUSE_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def _rerun_reusing_freed_memory() -> None:
    """Runs this command again with REUSE_FREED_MEMORY in its environment (glibc reads it only at start-up)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    env = {**os.environ, **REUSE_FREED_MEMORY}
    os.execve(sys.executable, [sys.executable, "-m", "fastops.bench", *sys.argv[1:]], env)


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
    parser.add_argument("--headline", action="store_true",
                        help="only DESIGN.md's headline GPU rows, the ones with a target first")
    parser.add_argument("--cpu-train-step", action="store_true",
                        help="time fastops' headline training step (8192x1024x4096) on the CPU, for the "
                             "GPU-vs-CPU speed-up")
    parser.add_argument("--rep-ms", type=float, default=None,
                        help="GPU: milliseconds of repetitions per timing (do_bench's rep; default 200)")
    args = parser.parse_args(argv)

    # A time box's SIGTERM ends the run like Ctrl-C: the rows measured so far are already in the CSV, and the table
    # and plot are still drawn from them.
    signal.signal(signal.SIGTERM, _stop)
    if args.cpu_train_step:
        args.device = "cpu"
    if args.device == "cuda" and not fastops.has_cuda_kernels():
        print("fastops was built without CUDA kernels; rebuild on a machine with nvcc and CUDA torch", file=sys.stderr)
        return 2
    providers = [p for p in args.providers.split(",") if p] or None
    wanted_ops = {o for o in args.ops.split(",") if o}
    if args.cpu_train_step:
        from .cases_training import train_step_case
        from .headline import MLP

        batch = int(MLP.split("x")[0])
        jobs = plan_jobs([train_step_case("cpu", batch, providers=("fastops",))], ["fastops"])
    elif args.headline:
        if args.device != "cuda":
            print("--headline rows are GPU rows (shared/DESIGN.md); on the CPU run the suite without it",
                  file=sys.stderr)
            return 2
        from .headline import headline_cases, headline_jobs

        cases = [c for c in headline_cases() if not wanted_ops or c.op in wanted_ops]
        jobs = headline_jobs(cases, providers)
    else:
        cases = []
        for family in (f for f in args.families.split(",") if f):
            cases += [c for c in family_cases(family, args.device, args.quick)
                      if not wanted_ops or c.op in wanted_ops]
        jobs = plan_jobs(cases, providers)
    if not jobs:
        print("no benchmark case matches", file=sys.stderr)
        return 2

    slug = device_slug(args.device) + ("-quick" if args.quick else "")
    path = os.path.join(args.results, f"{slug}.csv")

    def record(result):
        if not args.no_csv:
            append_csv([result], path, args.device)

    ceilings, copy_row = measure_ceilings(args.device)
    record(copy_row)
    results = []
    interrupted = False
    try:
        run_jobs(jobs, args.device, quick=args.quick, progress=not args.no_progress, rep_ms=args.rep_ms,
                 on_result=lambda r: (results.append(r), record(r)))
    except KeyboardInterrupt:
        interrupted = True
        print(f"\nstopped after {len(results)} of {len(jobs)} timings", file=sys.stderr)

    print(f"\n{device_label(args.device)}, torch {torch.__version__}; measured copy ceiling "
          f"{ceilings['GB/s']:.0f} GB/s; glibc MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}\n")
    print(table(results, ceilings))
    if not args.no_csv:
        print(f"\nrows appended to {os.path.relpath(path)}")
    png = plot(results, os.path.join(args.plots, f"{slug}.png"), f"fastops speed-up, {device_label(args.device)}")
    if png:
        print(f"plot written to {os.path.relpath(png)}")
    return 1 if interrupted else 0


if __name__ == "__main__":
    _rerun_reusing_freed_memory()
    sys.exit(main())
