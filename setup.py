"""Builds the optional extension ``deeplab_compile._C``.

* The C++ kernels (``csrc/ops/*.cpp`` schemas, ``csrc/cpu/*.cpp``) are always built.
* The CUDA kernels (``csrc/cuda/*.cu``) are built when torch has CUDA and nvcc is found,
  or when ``FORCE_CUDA=1``.  ``TORCH_CUDA_ARCH_LIST`` is honoured by torch's builder.
* ``DEBUG=1`` builds without optimisation and with debug symbols.
* ``DEEPLAB_NO_EXT=1`` skips the extension (every op then uses its PyTorch reference).
"""
import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _ext_modules():
    if os.environ.get("DEEPLAB_NO_EXT", "0") == "1":
        print("deeplab_compile: DEEPLAB_NO_EXT=1, not building _C", file=sys.stderr)
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    rel = lambda pats: sorted(os.path.relpath(p, ROOT) for pat in pats
                              for p in glob.glob(os.path.join(ROOT, pat), recursive=True))
    cpp = rel(["csrc/ops/*.cpp", "csrc/cpu/*.cpp", "csrc/*.cpp"])
    cu = rel(["csrc/cuda/*.cu"])
    if not cpp:
        return [], {}
    debug = os.environ.get("DEBUG", "0") == "1"
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    use_cuda = bool(cu) and ((torch.cuda.is_available() and CUDA_HOME is not None) or force_cuda)

    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-std=c++17", "-fopenmp"]
    nvcc = ["-O0", "-g", "-G"] if debug else ["-O3", "--use_fast_math"]
    macros = []
    sources = cpp + (cu if use_cuda else [])
    if use_cuda:
        macros.append(("WITH_CUDA", None))
    print(f"deeplab_compile: building _C  torch={torch.__version__}  cuda={'yes' if use_cuda else 'no'}"
          f"  CUDA_HOME={CUDA_HOME}  TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(auto)')}"
          f"  debug={debug}  sources={len(sources)}", file=sys.stderr)
    Ext = CUDAExtension if use_cuda else CppExtension
    ext = Ext(
        "deeplab_compile._C",
        sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=macros,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc} if use_cuda else {"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _ext_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
