"""Build panning: the Python package, panning.kernels (Triton, from kernels/), the C++ extension
panning._C (always) and the CUDA extension panning._C_cuda (only where torch has CUDA and a toolkit).

Environment:
  PANNING_CUDA=auto|1|0   build the CUDA extension: where possible (default), always (fail if not), never.
  PANNING_NATIVE=1|0      compile the CPU kernels for this machine's instruction set (default 1).
  MAX_JOBS                parallel compile jobs (torch's BuildExtension).
"""
import glob
import os
import platform

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _cuda_wanted() -> bool:
    mode = os.environ.get("PANNING_CUDA", "auto").lower()
    if mode not in ("auto", "1", "0"):
        raise SystemExit(f"PANNING_CUDA must be auto, 1 or 0, got {mode!r}")
    possible = cpp_extension.CUDA_HOME is not None and __import__("torch").version.cuda is not None
    if mode == "1" and not possible:
        raise SystemExit("PANNING_CUDA=1 but torch has no CUDA or no CUDA toolkit was found (CUDA_HOME)")
    return mode == "1" or (mode == "auto" and possible)


def _cpu_flags() -> list[str]:
    flags = ["-O3", "-fopenmp", "-std=c++20"]  # torch 2.13's headers expect C++20
    if os.environ.get("PANNING_NATIVE", "1") == "1" and platform.machine() in ("x86_64", "AMD64", "aarch64"):
        flags.append("-march=native" if platform.machine() != "aarch64" else "-mcpu=native")
    return flags


def _torch_openmp_link_args() -> list[str]:
    """Link the OpenMP runtime torch itself loads (torch/lib/libgomp.so.1, found by rpath), so that one
    process holds one OpenMP thread pool: at::parallel_for in our kernels then runs on torch's own threads.
    Falls back to the compiler's runtime where torch ships none (e.g. a torch built against the system one)."""
    torch_lib = os.path.join(os.path.dirname(cpp_extension.__file__), "..", "lib")
    torch_lib = os.path.normpath(torch_lib)
    if os.path.exists(os.path.join(torch_lib, "libgomp.so.1")):
        return [f"-L{torch_lib}", "-l:libgomp.so.1", f"-Wl,-rpath,{torch_lib}"]
    return ["-fopenmp"]


def _extensions():
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))  # noqa: E731
    extensions = [
        cpp_extension.CppExtension(
            "panning._C",
            rel("csrc/bindings.cpp") + rel("csrc/cpu/*.cpp"),
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": _cpu_flags()},
            extra_link_args=_torch_openmp_link_args(),
        )
    ]
    if _cuda_wanted():
        extensions.append(
            cpp_extension.CUDAExtension(
                "panning._C_cuda",
                rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu"),
                include_dirs=[os.path.join(ROOT, "csrc")],
                extra_compile_args={"cxx": ["-O3", "-std=c++20"], "nvcc": ["-O3", "-std=c++20", "--use_fast_math"]},
            )
        )
    return extensions


setup(
    packages=find_packages(include=["panning", "panning.*"]) + ["panning.kernels"],
    package_dir={"panning.kernels": "kernels"},
    package_data={"panning.pbt.rl": ["agents/*.safetensors", "agents/*.json"]},  # the trained panning agent
    ext_modules=_extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
