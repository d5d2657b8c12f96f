"""What a built wheel was built from, so that a GPU visit installs it only where it is the right binary.

    python scripts/wheel_info.py hash                       # the source hash of this tree
    python scripts/wheel_info.py write WHEEL [SECONDS]      # WHEEL's folder gets build-info.txt
    python scripts/wheel_info.py match INFO                 # exit 0 when INFO fits this python's torch and tree

build-info.txt holds key=value lines: the wheel's file name, the torch it was compiled against (version and CUDA
version: the extension links libtorch's C++ ABI, so only that torch build may load it), the CUDA architectures,
the commit, the build time in seconds and the source hash: a sha256 over the files that go into the wheel (setup.py,
pyproject.toml, csrc/, fastops/ Python files), read from the working tree (not git: the GPU machine receives the
tree without .git). `match` fails, with the reason, when the torch or the sources differ: a stale wheel would test
code that is not the tree's.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh", ".py")


def source_files(root: str = ROOT) -> list[str]:
    files = [f for f in ("setup.py", "pyproject.toml") if os.path.exists(os.path.join(root, f))]
    for top in ("csrc", "fastops"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files += [os.path.relpath(os.path.join(dirpath, f), root) for f in sorted(filenames)
                      if f.endswith(SOURCE_SUFFIXES)]
    return sorted(files)


def source_hash(root: str = ROOT) -> str:
    h = hashlib.sha256()
    for rel in source_files(root):
        h.update(rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()[:16]


def torch_build() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__.split("+")[0], "torch_cuda": str(torch.version.cuda)}


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=False).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cuda_archs(wheel: str) -> str:
    """The GPU architectures whose machine code fastops/_C inside the wheel carries (cuobjdump --list-elf), e.g.
    'sm_80 sm_90a'; 'none' for a CPU build, 'unknown' without cuobjdump."""
    import re
    import tempfile
    import zipfile

    import torch

    if not torch.version.cuda:
        return "none"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from check_sass import tool_path  # cuobjdump from PATH or the nvidia-cuda-cuobjdump wheel

    bin_dir = tool_path()
    if bin_dir is None:
        return "unknown"
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        names = [n for n in z.namelist() if os.path.basename(n).startswith("_C.") and n.endswith(".so")]
        if not names:
            return "unknown"
        lib = z.extract(names[0], tmp)
        listing = subprocess.run([os.path.join(bin_dir, "cuobjdump"), "--list-elf", lib], capture_output=True,
                                 text=True, check=False).stdout
    archs = sorted(set(re.findall(r"\.(sm_\d+a?)\.", listing)))
    return " ".join(archs) or "none"


def read_info(path: str) -> dict[str, str]:
    info = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                key, value = line.rstrip("\n").split("=", 1)
                info[key] = value
    return info


def write(wheel: str, seconds: str = "") -> str:
    import torch

    info = {
        "wheel": os.path.basename(wheel),
        **torch_build(),
        "torch_full": torch.__version__,
        "cuda_arch": cuda_archs(wheel),
        "python": sys.version.split()[0],
        "commit": commit(),
        "source_hash": source_hash(),
        "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build_seconds": seconds,
        "wheel_bytes": str(os.path.getsize(wheel)),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(wheel)), "build-info.txt")
    with open(path, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in info.items())
    return path


def match(path: str) -> tuple[bool, str]:
    info = read_info(path)
    here = torch_build()
    wanted = f"torch {info.get('torch')} (CUDA {info.get('torch_cuda')})"
    have = f"torch {here['torch']} (CUDA {here['torch_cuda']})"
    if (info.get("torch"), info.get("torch_cuda")) != (here["torch"], here["torch_cuda"]):
        return False, f"built against {wanted}, this python has {have}"
    tree = source_hash()
    if info.get("source_hash") != tree:
        return False, f"built from sources {info.get('source_hash')} (commit {info.get('commit')}), the tree is {tree}"
    return True, f"built against {wanted} from this tree ({tree}, commit {info.get('commit')})"


def main(argv: list[str]) -> int:
    if argv[:1] == ["hash"]:
        print(source_hash())
        return 0
    if argv[:1] == ["write"] and len(argv) in (2, 3):
        print(write(*argv[1:]))
        return 0
    if argv[:1] == ["match"] and len(argv) == 2:
        ok, why = match(argv[1])
        print(why)
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
