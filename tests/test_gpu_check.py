"""The GPU visit's machinery, checked on a machine without a GPU: scripts/gpu_check.sh's dry run (wheel install, time
boxes, $OUT layout, summary), the headline benchmark rows DESIGN.md names, and the summary's target arithmetic."""

import csv
import os
import subprocess
import sys
import tarfile

import pytest

from fastops.bench.headline import ROWS, TARGETS, Row, headline_cases, headline_jobs, summary_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import wheel_info


def test_headline_cases_give_exactly_the_design_rows():
    # Building the GPU cases allocates nothing, so the row strings of a GPU run are checked here.
    cases = headline_cases()
    produced = {Row(c.op, m, c.dtype, c.shape) for c in cases for m in c.modes}
    assert produced == set(ROWS)
    assert len(ROWS) == 53
    for case in cases:
        assert {"fastops", "torch"} <= set(case.providers), case.id
    assert {t.row for t in TARGETS} <= set(ROWS)
    # spot checks against DESIGN.md's wording
    assert Row("matmul", "fwd", "tf32", "8192x4096x11008") in ROWS
    assert Row("linear_cross_entropy", "full", "bfloat16", "8192x4096x128256") in ROWS
    assert Row("mlp_train_step", "full", "bfloat16", "8192x1024x4096") in ROWS


def test_headline_jobs_put_the_targets_first():
    jobs = headline_jobs(headline_cases())
    needed = [i for i, (case, provider, mode) in enumerate(jobs)
              if any(t.row == Row(case.op, mode, case.dtype, case.shape)
                     and (provider == "fastops" or (provider == t.against and t.kind in ("speedup", "time", "memory")))
                     for t in TARGETS)]
    assert needed == list(range(len(needed))), "a job no target needs runs before one a target needs"
    assert jobs[len(needed) - 1][0].op == "mlp_train_step"  # the slowest compile last among them
    providers = {(c.op, c.dtype, c.shape, m): set() for c, _, m in jobs}
    for c, p, m in jobs:
        providers[(c.op, c.dtype, c.shape, m)].add(p)
    assert all({"fastops", "torch", "compile"} <= ps for ps in providers.values())
    ladder = providers[("matmul", "bfloat16", "4096x4096x4096", "fwd")]
    assert {"fastops_mma_sync", "fastops_sm90_base", "fastops_sm90_tma_store"} <= ladder


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["op", "provider", "mode", "dtype", "shape", "ms", "metric", "value", "peak_gib", "device", "torch",
                    "commit", "timestamp"])
        for op, provider, mode, dtype, shape, ms, value, peak in rows:
            w.writerow([op, provider, mode, dtype, shape, ms, "GB/s", value, peak, "NVIDIA H200", "2.11.0", "x", "t"])


def test_summary_computes_each_kind_of_target(tmp_path):
    n = "268435456"
    rows = [
        ("copy", "torch", "fwd", "float32", n, 0.5, 4300.0, ""),
        ("matmul", "fastops", "fwd", "bfloat16", "4096x4096x4096", 0.20, 0, ""),
        ("matmul", "torch", "fwd", "bfloat16", "4096x4096x4096", 0.19, 0, ""),  # 0.95x < 1.00: FAIL
        ("matmul", "fastops_mma_sync", "fwd", "bfloat16", "4096x4096x4096", 0.38, 0, ""),
        ("relu", "fastops", "fwd", "bfloat16", n, 0.26, 4128.0, ""),  # 96% of 4300
        ("relu", "torch", "fwd", "bfloat16", n, 0.27, 3975.0, ""),
        ("cross_entropy", "fastops", "full", "bfloat16", "8192x128256", 1.0, 0, 1.99),
        ("cross_entropy", "compile", "full", "bfloat16", "8192x128256", 1.8, 0, 3.9),
        ("linear_cross_entropy", "fastops", "full", "bfloat16", "8192x4096x128256", 40.0, 0, 1.2),
        ("linear_cross_entropy", "torch", "full", "bfloat16", "8192x4096x128256", 46.0, 0, 12.0),
        ("mlp_train_step", "fastops", "full", "bfloat16", "8192x1024x4096", 9.0, 0, ""),
        ("mlp_train_step", "compile", "full", "bfloat16", "8192x1024x4096", 10.0, 0, ""),
        # an earlier run of the same row: the later one counts
        ("matmul", "fastops", "fwd", "float16", "4096x4096x4096", 0.30, 0, ""),
        ("matmul", "torch", "fwd", "float16", "4096x4096x4096", 0.20, 0, ""),
        ("matmul", "fastops", "fwd", "float16", "4096x4096x4096", 0.19, 0, ""),
    ]
    _write_csv(tmp_path / "gpu.csv", rows)
    _write_csv(tmp_path / "cpu.csv", [("mlp_train_step", "fastops", "full", "bfloat16", "8192x1024x4096", 900.0, 0, "")])
    lines, all_pass = summary_lines(str(tmp_path / "gpu.csv"), str(tmp_path / "cpu.csv"))
    text = "\n".join(lines)
    assert not all_pass
    assert "FAIL    matmul fwd bfloat16 4096x4096x4096: 0.95x cuBLAS" in text
    assert "PASS    matmul fwd float16 4096x4096x4096: 1.05x cuBLAS" in text
    assert "PASS    relu fwd bfloat16 268435456: 1.04x torch" in text
    assert "PASS    relu fwd bfloat16 268435456: 96% of the copy bandwidth" in text
    assert "PASS    cross_entropy full bfloat16 8192x128256: 1.80x compile" in text
    assert "PASS    cross_entropy full bfloat16 8192x128256: peak 1.99 GiB" in text
    assert "PASS    linear_cross_entropy full bfloat16 8192x4096x128256: 1.15x torch" in text
    assert "PASS    linear_cross_entropy full bfloat16 8192x4096x128256: 10.0x less peak memory" in text
    assert "PASS    mlp_train_step full bfloat16 8192x1024x4096: fastops takes 0.90x compile's time" in text
    assert "MISSING matmul fwd tf32 8192x8192x8192" in text
    assert "ladder bfloat16 4096x4096x4096 vs cuBLAS: mma_sync 0.50x, all steps 0.95x" in text
    assert "GPU vs CPU, fastops mlp_train_step full bfloat16 8192x1024x4096: 100.0x faster on the GPU" in text
    assert lines[0].startswith(f"headline targets: 8 pass, 1 fail, {len(TARGETS) - 9} not measured")


def _dry_run_wheel() -> dict:
    """The build-info of the wheel the dry run will install: dist/gpu's (make gpu-wheel; in make gpu-wheel-test's venv,
    whose torch it was built for) or make wheel's CPU one (make test builds it first), whichever fits this python's
    torch and this tree, as gpu_check.sh chooses."""
    reasons = []
    for info in (os.path.join(REPO, "dist", "gpu", "build-info.txt"), os.path.join(REPO, "dist", "build-info.txt")):
        if not os.path.exists(info):
            reasons.append(f"no {os.path.relpath(info, REPO)}")
            continue
        ok, why = wheel_info.match(info)
        if ok:
            return wheel_info.read_info(info)
        reasons.append(f"{os.path.relpath(info, REPO)}: {why}")
    if os.environ.get("FASTOPS_GPU_CHECK_TEST_REQUIRE") == "1":
        pytest.fail(f"the dry run needs make wheel's wheel of this tree: {'; '.join(reasons)}")
    pytest.skip(f"run `make wheel` first (the dry run installs its wheel): {'; '.join(reasons)}")


def test_gpu_check_dry_run(tmp_path):
    """The whole script on this CPU machine. The sanitizer step gets a 5-second box and is held past it after its CPU
    stand-in ran (GPU_CHECK_DRY_STALL: on a fast, idle machine the stand-in alone finished in 3 s): it must end as
    TIMEOUT, its process killed, and the bench step after it must still run and report."""
    info = _dry_run_wheel()
    out = tmp_path / "out"
    env = dict(os.environ, FASTOPS_GPU_CHECK_DRY="1", OUT=str(out), PYTHON=sys.executable, GPU_CHECK_BOX_SANITIZE="5",
               GPU_CHECK_DRY_STALL="60",
               TMPDIR=str(tmp_path))
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log  # the timed-out step fails the run
    assert sorted(os.listdir(out)) == ["build-info.txt", "logs.tgz", "summary.txt"], log
    summary = (out / "summary.txt").read_text()
    statuses = {line.split()[1]: line.split()[0] for line in summary.splitlines()
                if line.split()[:1] and line.split()[0] in ("PASS", "FAIL", "SKIP", "TIMEOUT")
                and len(line.split()) > 2 and line.split()[2].isdigit()}
    assert statuses == {"install": "PASS", "sass": "SKIP", "smoke": "SKIP", "test": "SKIP", "sanitize": "TIMEOUT",
                        "bench": "SKIP"}, summary
    for step in ("smoke", "test", "bench"):
        assert any(line.startswith("SKIP") and f" {step} " in line and "skipped: no GPU" in line
                   for line in summary.splitlines()), summary
    assert "dry run, no GPU" in summary.splitlines()[0]
    assert f"archs {info['cuda_arch']}" in summary  # the wheel it chose, described by its build-info.txt
    assert f"of {len(TARGETS)})" in summary and "headline rows measured: 0 of 159" in summary
    with tarfile.open(out / "logs.tgz") as tar:
        names = {os.path.basename(n) for n in tar.getnames()}
    assert {"install.log", "smoke.log", "test.log", "sanitize.log", "machine.txt", "summary.txt"} <= names
    smoke_log = next(line for line in log.splitlines() if "installed" in line and "fastops/__init__.py" in line)
    assert str(tmp_path) in smoke_log  # fastops came from the wheel installed in the run's private folder
    assert not [t for t in os.listdir(tmp_path) if t.startswith("gpu_check.")], "the run's temporary folder is left"
