"""Install torch_flashinfer.

``pip install -e .`` needs no CUDA and no nvcc: the CPU reference works everywhere and the CUDA
kernels are built on first use (see README "Building the kernels"). ``TORCH_FLASHINFER_AOT=1 pip
install --no-build-isolation .`` builds the binding and every kernel library ahead of time.
"""

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
AOT = os.environ.get("TORCH_FLASHINFER_AOT") == "1"


class BuildPy(build_py):
    """Ship csrc/ inside the package (for just-in-time builds) and, with AOT, the kernel libraries."""

    def run(self):
        super().run()
        pkg = Path(self.build_lib) / "torch_flashinfer"
        shutil.copytree(ROOT / "csrc", pkg / "_csrc", dirs_exist_ok=True)
        if AOT:
            from torch_flashinfer import _kernels

            _kernels.build_all(pkg / "_prebuilt")


ext_modules, cmdclass = [], {"build_py": BuildPy}
if AOT:
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    ext_modules.append(CUDAExtension("torch_flashinfer._binding", ["csrc/binding/binding.cpp"],
                                     include_dirs=[str(ROOT / "csrc" / "include")],
                                     extra_compile_args={"cxx": ["-O3"]}))
    cmdclass["build_ext"] = BuildExtension

setup(
    name="torch_flashinfer",
    version="0.1.0",
    description="FP16/BF16 flash-attention inference kernels as PyTorch custom ops",
    packages=["torch_flashinfer", "torch_flashinfer.integrations", "torch_flashinfer.benchmark"],
    package_dir={"torch_flashinfer.integrations": "integrations"},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "ninja"],
    extras_require={
        "transformers": ["transformers>=4.53", "accelerate"],
        "bench": ["matplotlib"],
        "test": ["pytest", "expecttest", "transformers>=4.53", "accelerate", "matplotlib"],
    },
    entry_points={"console_scripts": ["torch-flashinfer-bench=torch_flashinfer.benchmark.__main__:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
