"""Reads the SASS of the objects `make cuda-check` compiled and fails when a kernel family lost the instructions it
exists for: 16-byte global loads/stores in the elementwise kernels, HGMMA + TMA in the Hopper GEMM.

    python scripts/check_sass.py build/cuda-check
    python scripts/check_sass.py --library fastops/_C.abi3.so

--library checks a built extension instead (`make gpu-wheel` and gpu_check.sh: the binary that runs on the GPU):
each family's kernels are told apart there by their mangled names (FUNCTIONS).

Uses cuobjdump/nvdisasm from PATH or from the nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm wheels; skips with a
message where neither is installed.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

# object file stem -> instructions (regexes) its sm_90a SASS must contain
REQUIRED = {
    "activations_cuda": [r"LDG\.E\.128", r"STG\.E\.128"],
    "gemm_sm90": [r"HGMMA\.64x256x16\.F32\.BF16", r"HGMMA\.64x128x16\.F32", r"HGMMA\.64x256x8\.F32\.TF32",
                  r"UTMALDG\.2D", r"UTMALDG\.2D\.MULTICAST", r"UTMASTG", r"USETMAXREG"],
}


# object file stem -> a regex of its kernels' mangled names, for --library (one SASS dump of every kernel)
FUNCTIONS = {
    "activations_cuda": r"activations_cuda(_kernels)?_cu",  # setup.py compiles it as build/cuda_units/*_kernels.cu
    "gemm_sm90": r"_ZN7fastops4sm90",
}


def tool_path():
    """Directory holding cuobjdump and nvdisasm, or None."""
    if shutil.which("cuobjdump") and shutil.which("nvdisasm"):
        return os.path.dirname(shutil.which("cuobjdump"))
    try:
        import nvidia
    except ImportError:
        return None
    for root in nvidia.__path__:
        for candidate in glob.glob(os.path.join(root, "*", "bin")):
            if os.path.exists(os.path.join(candidate, "cuobjdump")):
                return candidate
    return None


def main(obj_dir: str) -> int:
    bin_dir = tool_path()
    if bin_dir is None:
        print("check_sass: cuobjdump/nvdisasm not found, skipped")
        return 0
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    failures = 0
    for stem, patterns in REQUIRED.items():
        obj = os.path.join(obj_dir, stem + ".o")
        if not os.path.exists(obj):
            print(f"check_sass: {obj} missing")
            failures += 1
            continue
        sass = subprocess.run(["cuobjdump", "--dump-sass", "-arch", "sm_90a", obj], capture_output=True, text=True,
                              env=env, check=True).stdout
        for pattern in patterns:
            count = len(re.findall(pattern, sass))
            print(f"check_sass: {stem}: {pattern} x{count}")
            failures += count == 0
    return 1 if failures else 0


def split_functions(sass: str) -> dict[str, str]:
    """Mangled kernel name -> its SASS, from one cuobjdump --dump-sass listing."""
    parts = re.split(r"^\s*Function : (\S+)\s*$", sass, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def main_library(lib: str) -> int:
    bin_dir = tool_path()
    if bin_dir is None:
        print("check_sass: cuobjdump/nvdisasm not found, skipped")
        return 0
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    sass = subprocess.run(["cuobjdump", "--dump-sass", "-arch", "sm_90a", lib], capture_output=True, text=True,
                          env=env, check=True).stdout
    functions = split_functions(sass)
    print(f"check_sass: {lib}: {len(functions)} sm_90a kernels")
    failures = 0
    for stem, patterns in REQUIRED.items():
        family = "".join(text for name, text in functions.items() if re.search(FUNCTIONS[stem], name))
        if not family:
            print(f"check_sass: no {stem} kernel in {lib}")
            failures += 1
            continue
        for pattern in patterns:
            count = len(re.findall(pattern, family))
            print(f"check_sass: {stem}: {pattern} x{count}")
            failures += count == 0
    # Local-memory traffic (register spills or a stack array) in any kernel, reported for the summary.
    spills = sorted(name for name, text in functions.items() if re.search(r"\b(LDL|STL)\b", text))
    print(f"check_sass: kernels with local-memory loads/stores (LDL/STL): {len(spills)}"
          + "".join(f"\n  {name[:140]}" for name in spills))
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--library"]:
        sys.exit(main_library(sys.argv[2]))
    sys.exit(main(sys.argv[1]))
