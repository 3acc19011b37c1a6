"""Build the CUDA side now instead of on first use.

    python -m torch_flashinfer.build                    # binding + every kernel library, current GPU
    python -m torch_flashinfer.build --archs 80,90a     # for these archs ($TORCH_FLASHINFER_CUDA_ARCHS)
    python -m torch_flashinfer.build --families fa3 --dtypes float16 --head-dims 128 --no-binding
        # only these kernel libraries (and append_kv's), without the torch binding
    python -m torch_flashinfer.build --compile-only --archs 80,90a
        # compile every kernel translation unit with nvcc (no GPU, no CUDA torch needed; used by CI)
"""

import argparse
import sys
import time

from . import _build, _kernels
from ._validation import HEAD_DIMS

_DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in _kernels._DTYPE_TAGS}  # float16, bfloat16


def _choices(parser, flag, text, allowed, convert=str):
    """The comma-separated values of ``flag``, each one of ``allowed`` (None: not given)."""
    if text is None:
        return None
    try:
        values = tuple(convert(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v not in allowed for v in values):
        parser.error(f"{flag}: comma-separated values of {', '.join(map(str, allowed))}, not {text!r}")
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_flashinfer.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", help="comma-separated arch tags, e.g. 80,90a (default: the current GPU)")
    parser.add_argument("--compile-only", action="store_true", help="compile kernel sources only, no link")
    parser.add_argument("--families", help=f"comma-separated subset of {','.join(_kernels.FAMILIES)} (default: all)")
    parser.add_argument("--dtypes", help=f"comma-separated subset of {','.join(_DTYPES)} (default: all)")
    parser.add_argument("--head-dims", help=f"comma-separated subset of {','.join(map(str, HEAD_DIMS))} (default: all)")
    parser.add_argument("--no-binding", action="store_true", help="kernel libraries only, not the torch binding")
    args = parser.parse_args(argv)
    archs = args.archs.split(",") if args.archs else None
    families = _choices(parser, "--families", args.families, _kernels.FAMILIES)
    dtypes = _choices(parser, "--dtypes", args.dtypes, tuple(_DTYPES))
    head_dims = _choices(parser, "--head-dims", args.head_dims, HEAD_DIMS, int)
    libraries = _kernels.all_libraries(families, dtypes and [_DTYPES[d] for d in dtypes], head_dims)
    start = time.time()
    if args.compile_only:
        failures = _build.compile_check(libraries, archs or ["80", "90a"])
        for failure in failures:
            print(failure, file=sys.stderr)
        print(f"compiled {len(libraries)} kernel libraries for sm_{', sm_'.join(archs or ['80', '90a'])} "
              f"in {time.time() - start:.0f} s: {'FAILED' if failures else 'ok'}")
        return 1 if failures else 0
    if not args.no_binding:
        _build.load_binding()
    paths = _kernels.build_all(archs=archs, libraries=libraries)
    print(f"built {'' if args.no_binding else 'the binding and '}{len(paths)} kernel libraries in "
          f"{time.time() - start:.0f} s under {_build.cache_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
