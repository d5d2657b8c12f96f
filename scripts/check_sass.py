"""The one SASS checker: fails when a kernel family lost the instructions it exists for (16-byte global loads/stores
in the elementwise kernels, HGMMA + TMA + setmaxnreg in the Hopper GEMM) or spills to local memory where it must not.

    python scripts/check_sass.py build/cuda-check         # the objects `make cuda-check` compiled, one per .cu
    python scripts/check_sass.py fastops/_C.abi3.so       # a built extension (or any one object / cubin)

From Python (scripts/gpu_check.sh does this on the built extension):

    sys.path.insert(0, "scripts"); import check_sass
    failures = check_sass.check("fastops/_C.abi3.so")    # list of messages, empty when every check passes
    failures = check_sass.check("build/cuda-check")      # a directory: each REQUIRED object in it

Each check prints one line `check_sass: <family>: <pattern> x<count>`. Uses cuobjdump from PATH or from the
nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm wheels; skips with a message (and no failure) where neither exists.
"""

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys

LOCAL_MEMORY = r"\b(LDL|STL)\b"  # spills (and local arrays): the GEMM mainloops must keep everything in registers
TMA_AND_SETMAXNREG = [r"UTMALDG\.2D", r"UTMALDG\.2D\.MULTICAST", r"UTMASTG", r"USETMAXREG"]


@dataclasses.dataclass(frozen=True)
class Family:
    kernels: str  # regex on the (mangled) names of the kernels the check reads
    required: tuple  # instruction regexes that must each occur at least once in those kernels' sm_90a SASS
    forbidden: tuple = ()  # instruction regexes that must not occur there


def _sm90(in_type: str, out_type: str, bn: int, hgmma: str) -> Family:
    # Mangled: fastops::sm90::gemm_kernel<T, OutT, BN, ...>, e.g. gemm_kernelI13__nv_bfloat16S2_Li256E...
    out = "S2_" if out_type == in_type else out_type
    return Family(rf"sm9011gemm_kernelI{in_type}{out}Li{bn}E", (hgmma, *TMA_AND_SETMAXNREG), (LOCAL_MEMORY,))


BF16, F16, F32 = "13__nv_bfloat16", "6__half", "f"

# object file stem (one .cu each) -> the family its kernels belong to
REQUIRED = {
    "activations_cuda": Family(r"fastops", (r"LDG\.E\.128", r"STG\.E\.128")),
    "losses_cuda": Family(r"fastops", (r"LDG\.E\.128", r"STG\.E\.128")),
    "gemm_sm90_bf16_n256": _sm90(BF16, BF16, 256, r"HGMMA\.64x256x16\.F32\.BF16"),
    "gemm_sm90_bf16_n128": _sm90(BF16, BF16, 128, r"HGMMA\.64x128x16\.F32\.BF16"),
    "gemm_sm90_bf16_splitk": _sm90(BF16, F32, 128, r"HGMMA\.64x128x16\.F32\.BF16"),
    "gemm_sm90_f16_n256": _sm90(F16, F16, 256, r"HGMMA\.64x256x16\.F32"),
    "gemm_sm90_f16_n128": _sm90(F16, F16, 128, r"HGMMA\.64x128x16\.F32"),
    "gemm_sm90_f16_splitk": _sm90(F16, F32, 128, r"HGMMA\.64x128x16\.F32"),
    "gemm_sm90_tf32": Family(r"sm9011gemm_kernelIffLi(128|256)E", (r"HGMMA\.64x256x8\.F32\.TF32",
                                                                    r"HGMMA\.64x128x8\.F32\.TF32",
                                                                    *TMA_AND_SETMAXNREG), (LOCAL_MEMORY,)),
    "gemm_mma": Family(r"mma_gemm_kernel", (r"HMMA\.16816\.F32\.BF16", r"HMMA\.1688\.F32\.TF32", r"LDSM"),
                       (LOCAL_MEMORY,)),
}


def tool_path():
    """Directory holding cuobjdump, or None."""
    if shutil.which("cuobjdump"):
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


def sass_functions(binary: str, bin_dir: str) -> dict:
    """The sm_90a SASS of every kernel in `binary` (object, cubin or shared library): mangled name -> text."""
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    dump = subprocess.run(["cuobjdump", "--dump-sass", "-arch", "sm_90a", binary], capture_output=True, text=True,
                          env=env, check=True).stdout
    functions, name = {}, None
    for line in dump.splitlines():
        match = re.match(r"\s*Function : (\S+)", line)
        if match:
            name = match.group(1)
            functions[name] = []
        elif name is not None:
            functions[name].append(line)
    return {k: "\n".join(v) for k, v in functions.items()}


def check_family(label: str, family: Family, functions: dict) -> list:
    """Messages for what `family` misses among `functions` (empty when it passes)."""
    sass = "\n".join(text for name, text in functions.items() if re.search(family.kernels, name))
    if not sass:
        print(f"check_sass: {label}: no kernel matches {family.kernels!r}")
        return [f"{label}: no kernel matches {family.kernels!r}"]
    failures = []
    for pattern in family.required:
        count = len(re.findall(pattern, sass))
        print(f"check_sass: {label}: {pattern} x{count}")
        if count == 0:
            failures.append(f"{label}: {pattern} missing")
    for pattern in family.forbidden:
        count = len(re.findall(pattern, sass))
        print(f"check_sass: {label}: {pattern} x{count} (must be 0)")
        if count:
            failures.append(f"{label}: {pattern} found {count} times")
    return failures


def check(path: str, families: dict | None = None) -> list:
    """Checks a directory of objects (<stem>.o for each REQUIRED stem) or one binary holding every family (a built
    extension). Returns the failure messages; an empty list when everything passes or cuobjdump is missing."""
    families = REQUIRED if families is None else families
    bin_dir = tool_path()
    if bin_dir is None:
        print("check_sass: cuobjdump not found, skipped")
        return []
    failures = []
    if os.path.isdir(path):
        for stem, family in families.items():
            obj = os.path.join(path, stem + ".o")
            if not os.path.exists(obj):
                print(f"check_sass: {obj} missing")
                failures.append(f"{obj} missing")
                continue
            failures += check_family(stem, family, sass_functions(obj, bin_dir))
    else:
        functions = sass_functions(path, bin_dir)
        for stem, family in families.items():
            failures += check_family(stem, family, functions)
    return failures


def main(argv: list) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    failures = check(argv[0])
    for failure in failures:
        print(f"check_sass: FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
