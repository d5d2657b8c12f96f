"""Benchmark harness: times fastops, torch eager and torch.compile on the same inputs in one process.

A :class:`Case` names one row family of the CSV (op, dtype, shape) and knows how to build its inputs, the
callables of each provider, and the minimal FLOPs / bytes each mode must spend (the roofline numerator).
Each op family contributes cases in ``fastops/bench/cases_<family>.py``; :func:`run` times them all.

GPU timing: ``triton.testing.do_bench`` (CUDA events, L2 flushed, median). CPU timing:
``torch.utils.benchmark.Timer.blocked_autorange`` on all of torch's threads (median). Peak memory (GPU only) is the
peak allocated during one call minus what was allocated before it (inputs included there), i.e. the op's extra
memory.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import functools
import os
import platform
import re
import subprocess
from collections.abc import Callable, Sequence

import torch

import fastops

CSV_COLUMNS = ("op", "provider", "mode", "dtype", "shape", "ms", "metric", "value", "peak_gib", "device", "torch",
               "commit", "timestamp")
MODES = ("fwd", "bwd", "full")


@dataclasses.dataclass
class Case:
    """One benchmarked problem.

    make_inputs(device) -> tuple of arguments (tensors that need gradients have requires_grad set).
    providers: name -> callable taking those arguments and returning one tensor. 'compile' is added
    automatically as torch.compile of the 'torch' provider unless given.
    flops(mode) / bytes(mode): the minimal work of that mode; the metric is TFLOP/s when flops is given, else GB/s.
    """

    op: str
    dtype: str
    shape: str
    make_inputs: Callable[[str], tuple]
    providers: dict[str, Callable]
    modes: Sequence[str] = ("fwd",)
    bytes: Callable[[str], float] | None = None
    flops: Callable[[str], float] | None = None
    tf32: bool = False
    # The providers run a whole training step themselves (forward, backward, optimizer): timed as mode "full".
    whole_step: bool = False
    # Environment variables set while a provider is timed: kernel-variant switches the extension reads at every call
    # (FASTOPS_SM90_NO_CLUSTER=1, ...), so one run can time the steps of a kernel's ladder side by side.
    provider_env: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.op}-{self.dtype}-{self.shape}"

    def metric(self) -> str:
        return "TFLOP/s" if self.flops is not None else "GB/s"

    def rate(self, mode: str, ms: float) -> float:
        if self.flops is not None:
            return self.flops(mode) / (ms * 1e-3) / 1e12
        return self.bytes(mode) / (ms * 1e-3) / 1e9


@dataclasses.dataclass
class Result:
    case: Case
    provider: str
    mode: str
    ms: float
    value: float
    peak_gib: float | None


def device_slug(device: str) -> str:
    """File name for results: the GPU's name (nvidia-h100-80gb-hbm3) or 'cpu'."""
    if device == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    return "cpu"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(device: str) -> str:
    """The CSV's device column: the GPU's name, or the CPU's model with the kernel levels in use (fastops' and
    ATen's: FASTOPS_CPU_CAPABILITY / ATEN_CPU_CAPABILITY choose them) and torch's thread count."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return (f"{_cpu_model()} [fastops {fastops.cpu_capability()} / ATen "
            f"{torch.backends.cpu.get_cpu_capability().lower()}] x{torch.get_num_threads()} threads")


def git_commit() -> str:
    """The commit the timed code was built from: $FASTOPS_COMMIT when set (scripts/gpu_check.sh sets it from the
    wheel's build-info.txt: the GPU machine gets the working tree without .git, and an installed wheel lives outside
    the checkout), else the checkout holding this file, else the current directory's."""
    if os.environ.get("FASTOPS_COMMIT"):
        return os.environ["FASTOPS_COMMIT"]
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for root in (here, os.getcwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                 text=True, check=True).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, check=False).stdout.strip()
            return out + ("-dirty" if dirty else "")
        except (OSError, subprocess.CalledProcessError):
            continue
    return "unknown"


def _grad_targets(args: tuple) -> list[torch.Tensor]:
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def mode_callable(fn: Callable, args: tuple, mode: str) -> Callable[[], object]:
    """A zero-argument callable that runs `mode` of fn(*args): the forward, the backward of one saved forward
    (retain_graph, so it can be timed repeatedly), or forward + backward (a training step's loss.backward())."""
    inputs = _grad_targets(args)
    if mode == "fwd":  # inference forward: no graph is recorded
        def run():
            with torch.no_grad():
                return fn(*args)
        return run
    if not inputs:
        raise ValueError("bwd/full need inputs that require grad")
    if mode == "bwd":
        out = fn(*args)
        grad = torch.randn_like(out)
        return lambda: torch.autograd.grad(out, inputs, grad, retain_graph=True)
    if mode == "full":
        grad_holder = {}

        def run():
            out = fn(*args)
            if "g" not in grad_holder:
                # A scalar (a reduced loss) gets 1, as in loss.backward(); anything else a random gradient.
                grad_holder["g"] = torch.ones_like(out) if out.dim() == 0 else torch.randn_like(out)
            return torch.autograd.grad(out, inputs, grad_holder["g"])
        return run
    raise ValueError(f"unknown mode {mode}")


def time_ms(run: Callable[[], object], device: str, quick: bool, rep_ms: float | None = None) -> float:
    """Median milliseconds of run(). GPU: do_bench repeats for rep_ms (default 200, 40 when quick) of GPU time."""
    if device == "cuda":
        rep = rep_ms if rep_ms is not None else (40 if quick else 200)
        try:
            from triton.testing import do_bench
        except ImportError:  # CUDA events by hand when triton is absent
            return _cuda_event_ms(run, reps=10 if quick else 50)
        return float(do_bench(run, warmup=10 if quick else 25, rep=rep, return_mode="median"))
    from torch.utils import benchmark
    run()  # warm-up (first-call allocations, compile)
    # Timer runs on one thread unless told otherwise; time with every thread torch would use (the report's label).
    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=0.2 if quick else 1.0)
    return measurement.median * 1e3


def _cuda_event_ms(run, reps):
    for _ in range(3):
        run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def peak_extra_gib(run: Callable[[], object], device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = run()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del result
    return peak / 2**30


def copy_case(device: str) -> Case:
    """The device copy that gives the roofline ceiling for bytes: dst.copy_(src), bytes read + written. Its row
    goes into the CSV (op 'copy', provider 'torch'), so that a result file carries the ceiling it was measured
    against."""
    n = (1 << 28) if device == "cuda" else (1 << 25)

    def make_inputs(dev):
        src = torch.empty(n, dtype=torch.float32, device=dev).uniform_()
        return src, torch.empty_like(src)

    return Case(op="copy", dtype="float32", shape=str(n), make_inputs=make_inputs,
                providers={"torch": lambda src, dst: dst.copy_(src)}, bytes=lambda mode: 2.0 * n * 4)


def measure_ceilings(device: str) -> tuple[dict[str, float], Result]:
    """The device's copy bandwidth (GB/s, bytes read + written) measured now, in this run, and its result row."""
    (result,) = run_cases([copy_case(device)], device, quick=True, providers=["torch"], progress=False)
    return {"GB/s": result.value}, result


Job = tuple[Case, str, str]  # (case, provider, mode)


def plan_jobs(cases: Sequence[Case], providers: Sequence[str] | None = None) -> list[Job]:
    """Every (case, provider, mode) to time, in case order; 'compile' (torch.compile of the 'torch' provider) is
    added to every case that has a 'torch' provider. `providers` keeps only those named."""
    jobs = []
    for case in cases:
        names = list(case.providers)
        if "compile" not in names and "torch" in names:
            names.append("compile")
        for provider in names:
            if providers and provider not in providers:
                continue
            for mode in case.modes:
                jobs.append((case, provider, mode))
    return jobs


@contextlib.contextmanager
def tf32_allowed(allowed: bool):
    """torch.backends.cuda.matmul.allow_tf32 = allowed (fastops and torch follow it alike), restored afterwards. The
    one copy: the benchmarks, the GPU smoke and sanitize scripts and the tests use it."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


@contextlib.contextmanager
def provider_settings(case: Case, provider: str):
    """What a provider runs under while it is called and timed: TF32 as the case's dtype says ('tf32' rows), and
    the provider's environment switches (the GEMM ladder's FASTOPS_SM90_* variants). Both restored afterwards."""
    with tf32_allowed(case.tf32), _environment(case.provider_env.get(provider, {})):
        yield


def provider_fn(case: Case, provider: str, compiled_cache: dict | None = None, mode: str = "") -> Callable:
    """The provider's callable; 'compile' is torch.compile of the 'torch' provider unless the case defines its
    own (one compiled function per case and mode when a cache is given)."""
    if provider != "compile" or "compile" in case.providers:
        return case.providers[provider]
    if compiled_cache is None:
        return torch.compile(case.providers["torch"])
    key = (id(case), mode)
    if key not in compiled_cache:
        torch._dynamo.reset()
        compiled_cache[key] = torch.compile(case.providers["torch"])
    return compiled_cache[key]


def job_callable(case: Case, provider: str, mode: str, device: str, compiled_cache: dict | None = None):
    """(run, args): a zero-argument callable doing one `mode` call of the provider on fresh inputs, and the inputs
    (kept alive by the caller while it times run). Call inside provider_settings(case, provider)."""
    args = case.make_inputs(device)
    fn = provider_fn(case, provider, compiled_cache, mode)
    run = functools.partial(fn, *args) if case.whole_step else mode_callable(fn, args, mode)
    return run, args


def run_jobs(jobs: Sequence[Job], device: str, *, quick: bool = False, progress: bool = True,
             rep_ms: float | None = None, on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Times each job in order; on_result(result) is called as soon as each is measured (the CLI appends it to the
    CSV then, so a run stopped by a time limit keeps every row it finished)."""
    bar = _progress(len(jobs), progress)
    results = []
    compiled_cache: dict[tuple[int, str], Callable] = {}
    try:
        for case, provider, mode in jobs:
            bar.set_description(f"{case.id} {provider} {mode}")
            with provider_settings(case, provider):
                run, args = job_callable(case, provider, mode, device, compiled_cache)
                ms = time_ms(run, device, quick, rep_ms)
                peak = peak_extra_gib(run, device)
                del run, args
            result = Result(case, provider, mode, ms, case.rate(mode, ms), peak)
            results.append(result)
            if on_result is not None:
                on_result(result)
            bar.update(1)
    finally:
        bar.close()
    return results


def run_cases(cases: Sequence[Case], device: str, *, quick: bool = False, providers: Sequence[str] | None = None,
              progress: bool = True, rep_ms: float | None = None) -> list[Result]:
    return run_jobs(plan_jobs(cases, providers), device, quick=quick, progress=progress, rep_ms=rep_ms)


@contextlib.contextmanager
def _environment(variables: dict[str, str]):
    # The extension reads its kernel-variant switches once per process; _refresh_kernel_switches re-reads them after
    # each change, so that every provider runs the variant its variables name.
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    _refresh_kernel_switches(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
        _refresh_kernel_switches(variables)


def _refresh_kernel_switches(variables: dict[str, str]) -> None:
    if variables:
        torch.ops.fastops._refresh_kernel_switches()


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
        return tqdm(total=total, disable=not enabled, leave=False, dynamic_ncols=True)
    except ImportError:
        return _PlainProgress(total, enabled)


class _PlainProgress:
    def __init__(self, total, enabled):
        self.total, self.done, self.enabled = total, 0, enabled

    def set_description(self, text):
        if self.enabled:
            print(f"[{self.done + 1}/{self.total}] {text}", flush=True)

    def update(self, n):
        self.done += n

    def close(self):
        pass


def append_csv(results: Sequence[Result], path: str, device: str) -> None:
    new = not os.path.exists(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    commit, label = git_commit(), device_label(device)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        for r in results:
            writer.writerow([r.case.op, r.provider, r.mode, r.case.dtype, r.case.shape, f"{r.ms:.6g}",
                             r.case.metric(), f"{r.value:.6g}",
                             "" if r.peak_gib is None else f"{r.peak_gib:.4g}", label, torch.__version__, commit,
                             stamp])
