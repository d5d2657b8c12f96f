"""Reads the SASS of the objects `make cuda-check` compiled and fails when a kernel family lost the instructions it
exists for: 16-byte global loads/stores in the elementwise kernels, HGMMA + TMA in the Hopper GEMM.

    python scripts/check_sass.py build/cuda-check

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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
