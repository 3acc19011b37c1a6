"""Building the CUDA side, just in time or ahead of time.

Two kinds of artefacts:
- kernel libraries: one shared library per variant (family, dtype, head_dim, arch), built from
  torch-free sources in ``csrc/kernels`` with plain nvcc through ninja. They export the C entry
  points of ``csrc/include/torch_flashinfer/api.h``.
- the binding: one torch extension (``csrc/binding/binding.cpp``) that fills the params structs
  and calls a library's entry point.

Where things go: ``$TORCH_FLASHINFER_CACHE_DIR`` (default ``~/.cache/torch_flashinfer``), in a
folder per source hash, so an edited kernel is rebuilt and an unchanged one never is. An
ahead-of-time build (``TORCH_FLASHINFER_AOT=1 pip install --no-build-isolation .``) puts the
same files in ``torch_flashinfer/_prebuilt``, looked up first.

Architectures: ``$TORCH_FLASHINFER_CUDA_ARCHS`` (e.g. ``"80;90a"``), else the current GPU's
(sm_90 is built as sm_90a so Hopper-only instructions are available).

Concurrency: a build holds an ``flock`` on a lock file next to its output. The kernel releases
it when the holder dies, so a killed build never blocks the next one; outputs are written under
a temporary name and renamed into place, so a half-built library is never loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PREBUILT_DIR = PACKAGE_DIR / "_prebuilt"


def csrc_dir() -> Path:
    """csrc/ of a source checkout or editable install, else the copy shipped in the package;
    ``TORCH_FLASHINFER_CSRC`` points elsewhere (A/B timing of two source trees)."""
    override = os.environ.get("TORCH_FLASHINFER_CSRC")
    if override:  # no fallback: an A/B run must not silently build the other tree
        if not (Path(override) / "include" / "torch_flashinfer" / "params.h").exists():
            raise RuntimeError(f"torch_flashinfer: TORCH_FLASHINFER_CSRC={override} is not a csrc/ directory")
        return Path(override).resolve()  # the build runs ninja in the cache directory
    for candidate in (PACKAGE_DIR.parent / "csrc", PACKAGE_DIR / "_csrc"):
        if (candidate / "include" / "torch_flashinfer" / "params.h").exists():
            return candidate
    raise RuntimeError("torch_flashinfer: CUDA sources (csrc/) not found; reinstall the package")


def cache_dir() -> Path:
    root = os.environ.get("TORCH_FLASHINFER_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "torch_flashinfer")
    return Path(root)


def cuda_archs(device=None) -> list[str]:
    """Arch tags to build, e.g. ["90a"]: $TORCH_FLASHINFER_CUDA_ARCHS or the GPU's (current by default)."""
    env = os.environ.get("TORCH_FLASHINFER_CUDA_ARCHS")
    if env:
        return [a.strip().replace("sm_", "") for a in env.replace(",", ";").split(";") if a.strip()]
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return ["90a"] if (major, minor) == (9, 0) else [f"{major}{minor}"]


def gencode_flags(archs: list[str]) -> list[str]:
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]


def cutlass_include() -> str | None:
    """CUTLASS/CuTe headers: $TORCH_FLASHINFER_CUTLASS_INCLUDE or the nvidia-cutlass wheel."""
    env = os.environ.get("TORCH_FLASHINFER_CUTLASS_INCLUDE")
    if env:
        return env
    try:
        import cutlass_library
    except ImportError:
        return None
    path = Path(cutlass_library.__file__).parent / "source" / "include"
    return str(path) if path.exists() else None


def nvcc_path() -> str:
    from torch.utils.cpp_extension import CUDA_HOME

    for candidate in (os.path.join(CUDA_HOME or "", "bin", "nvcc"), shutil.which("nvcc")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("torch_flashinfer: nvcc not found; install the CUDA toolkit or set CUDA_HOME "
                       "(or install a wheel built with TORCH_FLASHINFER_AOT=1)")


NVCC_FLAGS = [
    "-O3", "-std=c++17", "--use_fast_math", "-Xcompiler=-fPIC", "--expt-relaxed-constexpr",
    "-Xptxas=-warn-spills", "-lineinfo", "-Xcompiler=-fvisibility=hidden",
]


@dataclass(frozen=True)
class KernelLibrary:
    """One variant: sources compiled with ``defines`` into ``{name}_sm{arch}.so``."""

    name: str
    sources: tuple[str, ...]  # relative to csrc/
    defines: tuple[str, ...] = field(default=())

    def file_name(self, archs: list[str]) -> str:
        return f"{self.name}_sm{'_'.join(archs)}.so"


@lru_cache(maxsize=None)
def _source_hash() -> str:
    h = hashlib.sha256()
    root = csrc_dir()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".h", ".cuh", ".cu", ".cpp"):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    h.update(" ".join(NVCC_FLAGS).encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _compile_flags(lib: KernelLibrary, archs: list[str]) -> list[str]:
    root = csrc_dir()
    includes = [f"-I{root / 'include'}", f"-I{root / 'kernels'}"]
    cutlass = cutlass_include()
    if cutlass:
        includes.append(f"-I{cutlass}")
    return NVCC_FLAGS + gencode_flags(archs) + includes + [f"-D{d}" for d in lib.defines]


def _ninja_file(lib: KernelLibrary, archs: list[str], out_path: Path, nvcc: str) -> str:
    root = csrc_dir()
    flags = _compile_flags(lib, archs)
    lines = [
        "ninja_required_version = 1.3",
        f"nvcc = {nvcc}",
        f"flags = {' '.join(flags)}",
        "rule cu",
        "  command = $nvcc $flags -MD -MF $out.d -c $in -o $out",
        "  depfile = $out.d",
        "  deps = gcc",
        "rule link",
        "  command = $nvcc -shared -cudart shared $in -o $out",
    ]
    objects = []
    for i, src in enumerate(lib.sources):
        obj = f"obj{i}.o"
        objects.append(obj)
        lines.append(f"build {obj}: cu {root / src}")
    lines.append(f"build {out_path}: link {' '.join(objects)}")
    return "\n".join(lines) + "\n"


def parallel_builds() -> int:
    return int(os.environ.get("MAX_JOBS") or os.cpu_count() or 1)


def build_kernel_library(lib: KernelLibrary, archs: list[str] | None = None, out_dir: Path | None = None) -> Path:
    """Path of the library for ``lib``, building it first if needed (safe across processes)."""
    archs = archs or cuda_archs()
    file_name = lib.file_name(archs)
    prebuilt = PREBUILT_DIR / file_name
    if out_dir is None and prebuilt.exists():
        return prebuilt
    out_dir = out_dir or cache_dir() / _source_hash()
    target = out_dir / file_name
    if target.exists():
        return target
    with _exclusive(out_dir / f"{file_name}.lock"):
        if target.exists():  # built by another process while we waited
            return target
        print(f"torch_flashinfer: building flashinfer kernels for sm_{'+sm_'.join(archs)} (first use): {lib.name} ...",
              file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{lib.name}.") as tmp:
            tmp_out = Path(tmp) / file_name
            (Path(tmp) / "build.ninja").write_text(_ninja_file(lib, archs, tmp_out, nvcc_path()))
            res = subprocess.run(["ninja", "-C", tmp, "-j", str(parallel_builds())], capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"torch_flashinfer: building {lib.name} failed:\n{res.stdout}\n{res.stderr}")
            os.replace(tmp_out, target)
    return target


# Spill budget of the compile check, per kernel: the paged-cache instantiations of the 2-m-tile
# FA2 shapes keep up to 48 bytes of loop-invariant scalars in local memory (reloaded once per
# key tile, i.e. a handful of L1 hits next to ~1000 instructions). Anything above is a regression.
SPILL_BYTES_ALLOWED = 64


def _spill_stores(ptxas_line: str) -> int:
    words = ptxas_line.split()
    return int(words[words.index("spill") - 2]) if "spill" in words else 0


def compile_check(libs: list[KernelLibrary], archs: list[str]) -> list[str]:
    """Compile every source of ``libs`` for ``archs`` (no link): the torch-free check CI runs."""
    from concurrent.futures import ThreadPoolExecutor

    nvcc = shutil.which("nvcc") or nvcc_path()

    def one(job):
        lib, src, arch = job
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [nvcc, *_compile_flags(lib, [arch]), "-Xptxas=-v", "-c", str(csrc_dir() / src), "-o",
                   os.path.join(tmp, "out.o")]
            res = subprocess.run(cmd, capture_output=True, text=True)
        spills = [ln.strip() for ln in res.stderr.splitlines()
                  if "bytes spill stores" in ln and _spill_stores(ln) > SPILL_BYTES_ALLOWED]
        if res.returncode != 0:
            return f"{lib.name} sm_{arch}: compile error\n{res.stderr}"
        if spills:
            return f"{lib.name} sm_{arch}: register spills\n" + "\n".join(spills)
        return None

    jobs = [(lib, src, arch) for lib in libs for src in lib.sources for arch in archs]
    with ThreadPoolExecutor(max_workers=parallel_builds()) as pool:
        return [r for r in pool.map(one, jobs) if r]


def load_binding():
    """The torch extension module with ``fwd`` / ``append_kv`` (prebuilt, or built once and cached)."""
    with contextlib.suppress(ImportError):
        from . import _binding  # type: ignore[attr-defined]

        return _binding
    from torch.utils import cpp_extension

    root = csrc_dir()
    name = f"torch_flashinfer_binding_{_source_hash()}"
    build_dir = cache_dir() / _source_hash() / "binding"
    build_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(build_dir.parent / "binding.lock"):
        # cpp_extension's own lock file outlives a killed build and would block forever;
        # holding our flock, nobody else is building here, so a leftover one is stale.
        with contextlib.suppress(FileNotFoundError):
            (build_dir / "lock").unlink()
        if not any(build_dir.glob(f"{name}*.so")):
            print("torch_flashinfer: building the flashinfer torch binding (first use) ...", file=sys.stderr, flush=True)
        return cpp_extension.load(
            name=name,
            sources=[str(root / "binding" / "binding.cpp")],
            extra_include_paths=[str(root / "include")],
            extra_cflags=["-O3"],
            build_directory=str(build_dir),
            with_cuda=True,
            verbose=False,
        )
