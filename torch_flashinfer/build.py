"""Build the CUDA side now instead of on first use.

    python -m torch_flashinfer.build                    # binding + every kernel library, current GPU
    python -m torch_flashinfer.build --archs 80,90a     # for these archs ($TORCH_FLASHINFER_CUDA_ARCHS)
    python -m torch_flashinfer.build --compile-only --archs 80,90a
        # compile every kernel translation unit with nvcc (no GPU, no CUDA torch needed; used by CI)
"""

import argparse
import sys
import time

from . import _build, _kernels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_flashinfer.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", help="comma-separated arch tags, e.g. 80,90a (default: the current GPU)")
    parser.add_argument("--compile-only", action="store_true", help="compile kernel sources only, no link")
    args = parser.parse_args(argv)
    archs = args.archs.split(",") if args.archs else None
    start = time.time()
    if args.compile_only:
        failures = _build.compile_check(_kernels.all_libraries(), archs or ["80", "90a"])
        for failure in failures:
            print(failure, file=sys.stderr)
        print(f"compiled {len(_kernels.all_libraries())} kernel libraries for sm_{', sm_'.join(archs or ['80', '90a'])} "
              f"in {time.time() - start:.0f} s: {'FAILED' if failures else 'ok'}")
        return 1 if failures else 0
    _build.load_binding()
    paths = _kernels.build_all(archs=archs)
    print(f"built the binding and {len(paths)} kernel libraries in {time.time() - start:.0f} s under "
          f"{_build.cache_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
