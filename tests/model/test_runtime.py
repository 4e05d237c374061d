"""The runtime policy (kglfr.runtime): one decision of autocast dtype and memory format, used everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layouts import eval_net, synthetic_store

import kglfr.runtime as R
from kglfr.api import ReIDModel
from kglfr.data.records import TEST
from kglfr.data.store import Store
from kglfr.errors import KglfrError
from kglfr.eval.extract import embed_batch, store_features
from kglfr.eval.model_eval import evaluate_model
from kglfr.runtime import amp_dtype, cpu_has_bf16, input_format, resolve_policy

CPU = torch.device("cpu")
CPUS = {  # the flags that matter, as /proc/cpuinfo lists them on each kind of CPU
    "native_bf16": "fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile",
    "avx512": "fpu sse2 avx2 avx512f avx512bw avx512_vnni",
    "avx2": "fpu sse2 avx2 fma",
}


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """``fake_cpu(kind)``: the policy reads a /proc/cpuinfo of that kind of CPU from then on."""

    def use(kind: str) -> None:
        path = tmp_path / f"cpuinfo-{kind}"
        path.write_text(f"processor\t: 0\nflags\t\t: {CPUS[kind]}\nbogomips\t: 4000\n")
        monkeypatch.setattr(R, "CPUINFO", str(path))

    return use


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path, _ = synthetic_store(tmp_path_factory.mktemp("runtime"), ids=8, keypoints=False)
    return Store.open(path)


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    flags = "flags\t\t: fpu sse2 avx2 avx512f avx512bw {}\nbogomips\t: 4000\n"
    for extra, native in [("", False), ("avx512_bf16", True), ("amx_bf16 amx_tile", True)]:
        path = tmp_path / f"cpuinfo{extra}"
        path.write_text("processor\t: 0\n" + flags.format(extra))
        assert cpu_has_bf16(path) is native
    assert cpu_has_bf16(tmp_path / "missing") is False


def test_the_cpu_policy_and_off_is_the_plain_fp32_training_path(fake_cpu):
    fake_cpu("avx512")
    auto = resolve_policy("cpu")  # inference: float32 channels_last; bf16 only when asked
    assert (auto.amp_dtype, auto.channels_last, auto.amp_name) == (None, True, "off")
    training = resolve_policy("cpu", training=True)  # the training path of before, bit for bit
    assert (training.amp_dtype, training.channels_last) == (None, False)
    assert resolve_policy("cpu", "off", training=True) == training
    cl = resolve_policy("cpu", "bf16", training=True)
    assert (cl.amp_dtype, cl.channels_last) == (torch.bfloat16, True)
    off = resolve_policy("cpu", "off", "off")
    assert (off.amp_dtype, off.channels_last, off.amp_name) == (None, False, "off")
    bf16 = resolve_policy("cpu", "bf16")
    assert (bf16.amp_dtype, bf16.channels_last, bf16.amp_name) == (torch.bfloat16, True, "bfloat16")
    assert resolve_policy("cpu", "bf16", "off").channels_last is False
    assert resolve_policy("cpu", "off", "on").channels_last is True


def test_a_dtype_the_device_cannot_run_is_one_line_naming_what_it_supports():
    with pytest.raises(KglfrError) as e:
        amp_dtype("fp16", CPU, "train.amp")
    msg = str(e.value)
    assert "\n" not in msg and "train.amp=fp16" in msg and "train.amp=off, train.amp=bf16 or train.amp=int8" in msg
    line = "--amp fp16 is not supported on the CPU; it supports --amp off, --amp bf16 or --amp int8"
    with pytest.raises(KglfrError, match=line):
        resolve_policy("cpu", "fp16", name="--amp")
    with pytest.raises(KglfrError, match="unknown amp 'half'"):
        resolve_policy("cpu", "half")


def test_bf16_channels_last_features_match_fp32(store):
    net = eval_net(6)
    idx = store.indices(TEST)
    fp32 = store_features(net, store, idx, store.size, batch_size=16)
    policy = resolve_policy("cpu", "bf16")
    policy.model(net)
    assert input_format(net) == torch.channels_last
    bf16 = store_features(net, store, idx, store.size, batch_size=16, amp_dtype=policy.amp_dtype)
    for k in ("bn", "pool"):
        assert bf16[k].dtype == np.float32
        cos = (fp32[k] * bf16[k]).sum(1)  # both L2-normalised
        assert cos.min() >= 0.999, (k, cos.min())
        assert not np.array_equal(fp32[k], bf16[k])  # bf16 really ran


def test_embed_batch_follows_the_model_memory_format():
    net = eval_net(6).to(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 64, 32)
    seen = []
    net.forward_features = (lambda real: lambda images, m: seen.append(images) or real(images, m))(net.forward_features)
    embed_batch(net, x, 0)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_evaluate_numbers_do_not_depend_on_the_batch_size(store, amp):
    policy = resolve_policy("cpu", amp)
    net = policy.model(eval_net(6))
    runs = [evaluate_model(net, store, ["sysu-all"], size=store.size, trials=2, batch_size=b,
                           amp_dtype=policy.amp_dtype) for b in (3, 64)]  # fmt: skip
    small, large = (r.features["bn"].feats for r in runs)
    assert np.abs(small - large).max() < (1e-5 if amp == "off" else 2e-2)
    assert (small * large).sum(1).min() >= (0.9999 if amp == "off" else 0.999)
    a, b = (r.results["sysu-all"]["bn"].mean() for r in runs)
    if amp == "off":
        assert a == pytest.approx(b, abs=1e-9)
    else:  # a bf16 tie can flip a neighbour; the means stay within one query of each other
        assert a["mAP"] == pytest.approx(b["mAP"], abs=2.0)


def test_the_api_model_runs_under_its_policy(store):
    ckpt = {"input_size": list(store.size)}
    m32 = ReIDModel(eval_net(6), ckpt, amp="off")
    m16 = ReIDModel(eval_net(6), ckpt, amp="bf16")
    assert m32.policy.amp_name == "off" and m16.policy.amp_name == "bfloat16"
    assert input_format(m16.model) == input_format(m32.model) == torch.channels_last  # inference on the CPU
    images = [np.full((32, 16, 3), v, np.uint8) for v in (30, 90, 200)]
    f32, f16 = m32.embed(images, "visible"), m16.embed(images, "visible")
    assert (f32 * f16).sum(1).min() >= 0.999 and not np.array_equal(f32, f16)
    with pytest.raises(KglfrError, match="amp=fp16 is not supported on the CPU"):
        ReIDModel(eval_net(6), ckpt, amp="fp16")


# The policy table (docs/training.md, "GPU, AMP and DDP"): device x command -> precision, memory format.
# For each command: (amp_name, channels_last) under amp=auto, channels_last=auto.
BF16_CL, FP32_CL, FP32 = ("bfloat16", True), ("off", True), ("off", False)
POLICY_TABLE = {
    # training: bf16 only with R.CPU_AUTO_BF16_TRAINING on (see test_native_bf16_training_waits_for_its_switch)
    "native_bf16": {"train": FP32, "extract": BF16_CL, "search": BF16_CL, "gradcam": BF16_CL, "evaluate": FP32_CL},
    "avx512": {"train": FP32, "extract": FP32_CL, "search": FP32_CL, "gradcam": FP32_CL, "evaluate": FP32_CL},
    "avx2": {"train": FP32, "extract": FP32_CL, "search": FP32_CL, "gradcam": FP32_CL, "evaluate": FP32_CL},
    "cuda_bf16": {c: ("bfloat16", True) for c in R.COMMANDS} | {"evaluate": FP32_CL},
    "cuda_fp16": {c: ("float16", True) for c in R.COMMANDS} | {"evaluate": FP32_CL},
}


@pytest.mark.parametrize("kind", sorted(POLICY_TABLE))
def test_the_policy_table(kind, fake_cpu, monkeypatch):
    device = "cpu"
    if kind.startswith("cuda"):  # no GPU here: the one question the policy asks a GPU is answered for it
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: kind == "cuda_bf16")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # parse_device refuses an unseen GPU
        device = "cuda"
    else:
        fake_cpu(kind)
    for command, (amp, cl) in POLICY_TABLE[kind].items():
        p = resolve_policy(device, command=command, training=command == "train")
        assert (p.amp_name, p.channels_last) == (amp, cl), (kind, command)
        assert p.why.startswith("auto: ") and p.record()["why"] == p.why
        if command == "evaluate":
            assert "float32 on every device" in p.why
        elif kind == "native_bf16":
            assert "natively (amx_bf16, avx512_bf16)" in p.why
        elif kind in ("avx512", "avx2"):
            assert "no native bfloat16" in p.why
    assert resolve_policy(device, "off", command="evaluate").why == "asked for (amp=off)"


def test_native_bf16_training_waits_for_its_switch(fake_cpu, monkeypatch):
    fake_cpu("native_bf16")
    held = resolve_policy("cpu", training=True)
    assert (held.amp_name, held.channels_last) == ("off", False) and "training stays float32" in held.why
    monkeypatch.setattr(R, "CPU_AUTO_BF16_TRAINING", True)
    on = resolve_policy("cpu", training=True)
    assert (on.amp_name, on.channels_last, on.why) == ("bfloat16", True, resolve_policy("cpu").why)
    fake_cpu("avx512")
    assert resolve_policy("cpu", training=True).amp_name == "off"  # no native bf16: float32 either way


def test_asking_overrides_auto_for_every_command(fake_cpu):
    fake_cpu("avx2")  # no native bf16: bf16 still runs when asked (emulated)
    for command in R.COMMANDS:
        p = resolve_policy("cpu", "bf16", name="--amp", command=command)
        assert (p.amp_name, p.channels_last, p.why) == ("bfloat16", True, "asked for (--amp bf16)")
    fake_cpu("native_bf16")
    p = resolve_policy("cpu", "off", False, name="train.amp", training=True)
    assert (p.amp_name, p.channels_last, p.why) == ("off", False, "asked for (train.amp=off)")
    assert "(asked for (train.amp=off))" in p.describe()
    with pytest.raises(ValueError, match="unknown command 'serve'"):
        resolve_policy("cpu", command="serve")


def test_the_api_model_evaluates_in_float32_and_extracts_in_bf16_on_a_native_bf16_cpu(fake_cpu):
    fake_cpu("native_bf16")
    ckpt = {"input_size": [32, 16]}
    assert ReIDModel(eval_net(6), ckpt).policy.amp_name == "bfloat16"
    assert ReIDModel(eval_net(6), ckpt, command="evaluate").policy.amp_name == "off"


def test_release_host_memory_trims_the_heap_where_glibc_has_it():
    import platform

    got = R.release_host_memory()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert got in (0, 1)
    else:
        assert got is None
