"""Build lif_cuda._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc exists.

Switches (environment variables):
  LIF_NO_CUDA=1     build the CPU part only, even where CUDA is available
  LIF_FORCE_CUDA=1  fail instead of silently building CPU-only
  DEBUG=1           -O0 -g, no optimisation
  LIF_NATIVE=1      also -march=native (not portable; the default build picks AVX2/SSE4.1 at run time)
  TORCH_CUDA_ARCH_LIST  CUDA architectures (default here: 8.0;9.0+PTX)
See ../shared/BUILD.md for why the flags are what they are.
"""
import glob
import os

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _cuda_home():
    # A real toolkit directory (nvcc and the runtime's headers), not where an nvcc on PATH sits:
    # /usr/local/bin/nvcc may be a wrapper, from which torch would guess CUDA_HOME=/usr/local and
    # then fail to link -lcudart.
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        needed = (os.path.join(cand or "", "bin", "nvcc"), os.path.join(cand or "", "include", "cuda_runtime.h"))
        if cand and all(os.path.exists(f) for f in needed):
            return cand
    return None


# Before torch.utils.cpp_extension is imported: it reads CUDA_HOME once, at import time.
if _cuda_home() is not None:
    os.environ["CUDA_HOME"] = _cuda_home()

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda():
    force, no = _flag("LIF_FORCE_CUDA"), _flag("LIF_NO_CUDA")
    if force and no:
        raise RuntimeError("LIF_FORCE_CUDA=1 and LIF_NO_CUDA=1 contradict each other")
    if no:
        return False
    reasons = []
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} has no CUDA")
    home = _cuda_home()
    if home is None:
        reasons.append("nvcc not found (set CUDA_HOME)")
    if reasons:
        if force:
            raise RuntimeError("LIF_FORCE_CUDA=1 but the CUDA part cannot be built: " + "; ".join(reasons))
        print("lif_cuda: building the CPU part only (" + "; ".join(reasons) + ")")
        return False
    import torch.utils.cpp_extension as cpp_extension

    if os.path.realpath(cpp_extension.CUDA_HOME or "") != os.path.realpath(home):
        raise RuntimeError(f"torch.utils.cpp_extension took CUDA_HOME={cpp_extension.CUDA_HOME}, expected {home}")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    return True


def extensions():
    debug = _flag("DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # Bit-exactness (SPEC §1): never fast-math, no contraction into FMA. -fno-trapping-math lets GCC
    # if-convert and vectorise the spike select, -fno-math-errno lets it vectorise sqrt (no errno
    # branch); neither changes a result.
    cxx = opt + ["-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp", "-Wall"]
    # The torch this build is for: lif_cuda._ext compares it with the installed one at import.
    cxx.append(f"-DLIF_TORCH_VERSION={torch.__version__}")
    cxx += ["-march=native"] if _flag("LIF_NATIVE") else []  # opt-in only: not portable
    if _flag("LIF_VEC_REPORT"):
        cxx.append("-fopt-info-vec-optimized")
    sources = ["csrc/ops.cpp", "csrc/autograd.cpp", "csrc/host/output_pool.cpp"]
    sources += sorted(glob.glob("csrc/cpu/*.cpp"))
    kwargs = dict(
        name="lif_cuda._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    if _want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        # nvcc knows no -g0; -G (device debug) only under DEBUG. -fmad=false and never nvcc's
        # fast-math switch: no contraction, IEEE division (SPEC §1). A host-only function called from
        # device code is an error, not a warning. .ci/check_cuda.sh compiles with these flags.
        nvcc = (["-O0", "-g", "-G"] if debug else ["-O3"]) + [
            "-fmad=false",
            "--expt-relaxed-constexpr",
            "--Werror", "cross-execution-space-call",
            "-Xcompiler", "-ffp-contract=off",
        ]
        return [CUDAExtension(sources=sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)]
    return [CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **kwargs)]


setup(
    packages=find_packages(include=["lif_cuda", "lif_cuda.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
