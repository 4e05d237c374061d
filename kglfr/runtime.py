"""The runtime policy, decided once for a device and a command: autocast dtype, memory format and threads.

Training (``train.amp`` / ``train.channels_last``), extraction, evaluation, search, Grad-CAM and
``kglfr.load(..., amp=...)`` all ask :func:`resolve_policy`. ``auto`` picks, for the device and command:

============================  =======================  =====================  ==========================
device                        train                    extract, search,       evaluate (``kglfr
                                                       Grad-CAM               evaluate``, the training's)
============================  =======================  =====================  ==========================
GPU with bf16                 bf16, channels_last      bf16, channels_last    float32, channels_last
GPU without bf16              fp16, channels_last      fp16, channels_last    float32, channels_last
CPU with native bf16          float32, contiguous (*)  bf16, channels_last    float32, channels_last
(``avx512_bf16``/``amx_bf16``)
CPU without (AVX-512, AVX2)   float32, contiguous      float32,               float32, channels_last
                                                       channels_last
============================  =======================  =====================  ==========================

(*) :data:`CPU_AUTO_BF16_TRAINING` is off: the demo trained under bf16 (6 seeds, the head in float32) scored
2.6 Rank-1 points below float32, about one standard deviation of float32's seeds, and a demo epoch was only
1.3x faster; ``train.amp=bf16`` asks for it (1.7-2.1x on a ResNet-50 step).

Native bf16 is read from the CPU's flags in ``/proc/cpuinfo`` (:func:`cpu_has_bf16`), not from what
mkldnn claims: bf16 is emulated elsewhere and slower than float32 there. Evaluation stays float32 under
``auto`` on every device so that reported numbers do not depend on the machine (bf16 features of a trained
model differ from float32's by a little: the demo's ResNet-18, cosine 0.986 min, 0.995 mean); ``--amp`` /
``eval.amp`` asks for another. Each :class:`Policy` carries ``why``: the reason, for logs and records.

``int8`` (inference on the CPU, asked for, never picked by ``auto``): int8 backbones up to layer3,
calibrated on the first images embedded (:mod:`kglfr.model.quantize`); extraction 1.4-1.8x faster than
float32 on a 2-core CPU with AVX512-VNNI; the features approximate float32's.

Memory format ``auto``: channels_last on a GPU, under autocast, and for inference on the CPU (float32
channels_last: the same features up to float noise, 1.07-1.13x faster on a 2-core Xeon); a CPU training
step in float32 stays contiguous, so ``train.amp=off`` on the CPU is the training path of before, bit for
bit. A dtype the device cannot run is one error naming what it supports.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kglfr.errors import KglfrError

log = logging.getLogger(__name__)

AMP_CHOICES = ("auto", "off", "bf16", "fp16", "int8")  # int8: inference on the CPU only (kglfr.model.quantize)
CHANNELS_LAST_CHOICES = ("auto", "on", "off")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
COMMANDS = ("train", "extract", "search", "gradcam", "evaluate")  # what a policy is for (auto differs by it)
CPUINFO = "/proc/cpuinfo"  # where the CPU's flags are read (tests point it at a fake CPU's file)
# train.amp=auto on a CPU with native bf16 trains in bf16 when this is on. Off: the demo under bf16 lost 2.6
# Rank-1 points against float32 over 6 seeds each, one float32 standard deviation (docs/benchmarks.md).
CPU_AUTO_BF16_TRAINING = False


@functools.lru_cache(maxsize=8)
def cpu_flags(cpuinfo: str | Path | None = None) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (:data:`CPUINFO`; empty where unknown)."""
    try:
        text = Path(CPUINFO if cpuinfo is None else cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_bf16(cpuinfo: str | Path | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16); False where unknown
    (emulated bfloat16 is slower than float32 there)."""
    return any(f in cpu_flags(CPUINFO if cpuinfo is None else cpuinfo) for f in CPU_BF16_FLAGS)


def cpu_has_vnni(cpuinfo: str | Path | None = None) -> bool:
    """Whether this CPU has VNNI (AVX512-VNNI or AVX-VNNI): int8 products summed without the overflow
    that makes PyTorch's x86 int8 kernels use 7-bit activations elsewhere."""
    return any(f in cpu_flags(CPUINFO if cpuinfo is None else cpuinfo) for f in CPU_VNNI_FLAGS)


INT8_ENGINES = ("x86", "fbgemm")  # PyTorch's int8 CPU kernels for x86 (x86 = fbgemm + oneDNN, by shape)


@functools.lru_cache(maxsize=1)
def int8_engine() -> str | None:
    """The quantized engine int8 inference runs on here, or None where this PyTorch has none (an ARM CPU,
    or a release without ``torch.ao.quantization``'s FX graph mode)."""
    try:
        from torch.ao.quantization import quantize_fx  # noqa: F401
    except ImportError:
        return None
    engines = torch.backends.quantized.supported_engines
    return next((e for e in INT8_ENGINES if e in engines), None)


def supported_amp(device: torch.device, training: bool = False) -> tuple[str, ...]:
    """The ``amp`` values (besides ``auto``) the device can run. Every CPU runs bf16 (emulated, about as
    slow as float32, where it has no native bf16: ``auto`` picks it only where it is native), none fp16,
    and int8 for inference where PyTorch has an int8 engine for it."""
    if device.type == "cuda":
        return ("off", "bf16", "fp16") if torch.cuda.is_bf16_supported() else ("off", "fp16")
    return ("off", "bf16") if training or int8_engine() is None else ("off", "bf16", "int8")


def auto_amp(device: torch.device, command: str = "extract") -> tuple[torch.dtype | None, str]:
    """What ``amp=auto`` picks for ``command`` (one of :data:`COMMANDS`) on ``device``, and why."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")
    if command == "evaluate":
        return None, "auto: evaluation runs float32 on every device, so reported numbers do not depend on the machine"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return DTYPES["bf16"], "auto: the GPU computes bfloat16"
        return DTYPES["fp16"], "auto: the GPU has no bfloat16, float16 instead"
    native = sorted(f for f in CPU_BF16_FLAGS if f in cpu_flags(CPUINFO))
    if native and command == "train" and not CPU_AUTO_BF16_TRAINING:
        return None, (f"auto: the CPU computes bfloat16 natively ({', '.join(native)}), but training stays float32: "
                      "bf16 training cost the demo 2.6 Rank-1 points (train.amp=bf16 asks for it)")  # fmt: skip
    if native:
        return DTYPES["bf16"], f"auto: the CPU computes bfloat16 natively ({', '.join(native)})"
    return None, "auto: the CPU has no native bfloat16 (avx512_bf16, amx_bf16); emulated, it is slower than float32"


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    return "the CPU"


def amp_dtype(amp: str, device: torch.device, name: str = "amp", training: bool = False,
              command: str | None = None) -> torch.dtype | None:  # fmt: skip
    """The autocast dtype for ``amp`` (auto, off, bf16, fp16; int8 is float32 around int8 backbones) on
    ``device``: None means float32. ``name`` is the parameter as the caller's users know it (``train.amp``,
    ``--amp``); ``training``: for a training step (no int8); ``command``: what auto decides for (default:
    train when ``training``, else extract)."""
    if amp not in AMP_CHOICES:
        raise KglfrError(f"unknown {name} {amp!r}; use one of {', '.join(AMP_CHOICES)}")
    if amp == "auto":
        return auto_amp(device, command or ("train" if training else "extract"))[0]
    if amp == "off":
        return None
    supported = supported_amp(device, training)
    sep = " " if name.startswith("--") else "="
    if amp not in supported:
        why = "for inference only; training" if amp == "int8" and training else \
            f"not supported on {_describe(device)}; it"  # fmt: skip
        listed = [f"{name}{sep}{a}" for a in supported]
        listed = f"{', '.join(listed[:-1])} or {listed[-1]}" if len(listed) > 1 else listed[0]
        raise KglfrError(f"{name}{sep}{amp} is {why} supports {listed} (or auto)")
    return DTYPES.get(amp)


@dataclass(frozen=True)
class Policy:
    """How models run on ``device``: autocast dtype (None: float32) and memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    int8: bool = False  # int8 backbones (kglfr.model.quantize.Int8Model), float32 head
    why: str = field(default="", compare=False)  # why this precision: auto's reason, or what was asked for

    @property
    def amp_name(self) -> str:
        """As reports say it: ``off``, ``bfloat16``, ``float16`` or ``int8``."""
        if self.int8:
            return "int8"
        return "off" if self.amp_dtype is None else NAMES[self.amp_dtype]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` moved to the device, in the policy's memory format (in place); under int8, an
        :class:`~kglfr.model.quantize.Int8Model` around it (use the returned model); an ``Int8Model`` is
        returned as it is, with its calibration."""
        if self.int8:
            from kglfr.model.quantize import Int8Model

            if isinstance(model, Int8Model):
                return model
            return Int8Model(model.to(self.device, memory_format=self.memory_format))
        return model.to(self.device, memory_format=self.memory_format)

    def describe(self) -> str:
        """``cpu, amp bfloat16, channels_last`` and, where known, why (``(auto: the CPU ...)``)."""
        text = f"{self.device}, amp {self.amp_name}, {'channels_last' if self.channels_last else 'contiguous'}"
        return f"{text} ({self.why})" if self.why else text

    def record(self) -> dict:
        """The policy as run records keep it: amp, memory format, device and why."""
        return {"amp": self.amp_name, "memory_format": "channels_last" if self.channels_last else "contiguous",
                "device": str(self.device), "why": self.why}  # fmt: skip


def parse_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` (cpu, cuda, cuda:N); one line naming ``name`` for an unknown one or
    a GPU torch does not see, instead of torch's error."""
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise KglfrError(f"unknown {name} {str(device)!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise KglfrError(f"{name} {str(device)!r} was asked for but torch sees no CUDA GPU; use cpu")
    return dev


def resolve_policy(device: str | torch.device, amp: str = "auto", channels_last: str | bool = "auto",
                   name: str = "amp", training: bool = False, command: str | None = None) -> Policy:  # fmt: skip
    """The policy for ``device`` under the user's ``amp`` and ``channels_last`` (auto, on, off or a bool);
    ``training``: for a training step (float32 stays contiguous there on the CPU, see the module doc);
    ``command``: one of :data:`COMMANDS`, what ``auto`` decides for (default: train or extract)."""
    device = parse_device(device)
    command = command or ("train" if training else "extract")
    dtype = amp_dtype(amp, device, name, training, command)
    sep = " " if name.startswith("--") else "="
    why = auto_amp(device, command)[1] if amp == "auto" else f"asked for ({name}{sep}{amp})"
    if amp == "int8":  # the int8 kernels pick their own layout; the float head needs none
        return Policy(device, None, False, int8=True, why=why)
    if isinstance(channels_last, bool):
        cl = channels_last
    elif channels_last in CHANNELS_LAST_CHOICES:
        auto = device.type == "cuda" or dtype is not None or not training
        cl = auto if channels_last == "auto" else channels_last == "on"
    else:
        raise KglfrError(f"unknown channels_last {channels_last!r}; use auto, on or off (or true, false)")
    return Policy(device, dtype, cl, why=why)


def input_format(model: torch.nn.Module) -> torch.memory_format:
    """The memory format of ``model``'s first 4-d weight: inputs should follow it."""
    for p in model.parameters():
        if p.ndim == 4:
            cl = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            return torch.channels_last if cl else torch.contiguous_format
    return torch.contiguous_format


MAX_THREADS_PER_CORE = 4  # more only slows torch down; tens of thousands crash it (exit 139)


def set_threads(threads: int, name: str = "threads") -> None:
    """``threads`` > 0: torch's intra-op threads; 0 keeps torch's default (one per core). More than
    ``MAX_THREADS_PER_CORE`` per core of this machine is refused (``name`` is the parameter named)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads < 0 or threads > MAX_THREADS_PER_CORE * cores:
        raise KglfrError(f"{name}={threads} does not fit this machine ({cores} CPU cores); use 0 (one thread a "
                         f"core) or 1..{MAX_THREADS_PER_CORE * cores}")  # fmt: skip
    if threads > 0:
        torch.set_num_threads(threads)


def release_host_memory() -> int | None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``).

    The backward pass of a large batch frees gigabytes that the allocator keeps for the process; an
    evaluation after training would hold its own batches beside them. Returns ``malloc_trim``'s result
    (1: memory was released), or None where there is no glibc."""
    gc.collect()
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return int(trim(0))
