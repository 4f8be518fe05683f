"""What machine a run is on, and the compute precision that is fastest there.

bfloat16 pays only where the CPU computes it natively (AVX-512 BF16 or AMX):
elsewhere oneDNN emulates it, and on a 2-core AVX2 EPYC the mixed_bfloat16
policy trained 4x slower than float32 (issue 21). GPUs keep float32 (TF32 on
the tensor cores where the framework enables it).
"""

import os
import platform

NATIVE_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) that still include bfloat16 arithmetic;
# a lower cap (AVX2, AVX512_CORE, ...) makes oneDNN emulate it even on a CPU that has it.
BFLOAT16_ISA_CAPS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                     "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
# The CPU flags worth recording beside a speed figure.
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read()
    except OSError:  # not Linux: no flags known, so no bfloat16 by default
        return ""


def cpu_flags(cpuinfo=None):
    """The CPU's feature flags (`/proc/cpuinfo`), a set; empty where unknown."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_model(cpuinfo=None):
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def accelerator():
    """The accelerator Keras's backend computes on ("GPU", "TPU"), or None for the CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        platform_name = jax.devices()[0].platform
        return None if platform_name == "cpu" else platform_name.upper()
    if backend == "tensorflow":
        import tensorflow as tf

        return "GPU" if tf.config.list_physical_devices("GPU") else None
    if backend == "torch":
        import torch

        return "GPU" if torch.cuda.is_available() else None
    return None


def choose_precision(precision="auto", flags=None, device=None, isa_cap=None):
    """`(precision, reason)`: `precision` itself unless it is "auto".

    "auto" gives float32 on an accelerator and on a CPU without native
    bfloat16, and mixed_bfloat16 on a CPU with AVX-512 BF16 or AMX (unless
    `ONEDNN_MAX_CPU_ISA` caps oneDNN below them). `flags` (default: this
    CPU's), `device` (default: `accelerator()`) and `isa_cap` (default: the
    environment's) are arguments so the choice can be tested for any machine.
    """
    if precision != "auto":
        return precision, "as asked"
    device = accelerator() if device is None else device
    if device:
        return "float32", f"auto: on the {device}"
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "") if isa_cap is None else isa_cap
    if isa_cap and isa_cap.upper() not in BFLOAT16_ISA_CAPS:
        return "float32", f"auto: ONEDNN_MAX_CPU_ISA={isa_cap} keeps oneDNN from native bfloat16"
    native = sorted(set(NATIVE_BFLOAT16_FLAGS) & (cpu_flags() if flags is None else set(flags)))
    if native:
        return "mixed_bfloat16", f"auto: this CPU computes bfloat16 natively ({', '.join(native)})"
    return "float32", "auto: this CPU has no native bfloat16 (no AVX-512 BF16 or AMX), where it is emulated and slower"


def describe():
    """The machine, for results files: CPU model and flags, cores, GPU, backend, versions."""
    import keras

    flags = cpu_flags()
    backend = keras.backend.backend()
    if backend == "jax":  # the kinds of JAX's devices name them better than their platform
        import jax

        device = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    else:
        device = accelerator() or "CPU"
    description = {
        "device": device,
        "cpu": cpu_model(),
        "cpu_flags": [flag for flag in REPORTED_FLAGS if flag in flags],
        "cpu_count": os.cpu_count(),
        "backend": backend,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }
    if backend == "tensorflow":  # which kernels ran: Eigen's or oneDNN's (see lstm_stn_tf/__init__.py)
        description["tf_enable_onednn_opts"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    if backend in ("tensorflow", "jax"):
        description[backend] = __import__(backend).__version__
    return description
