"""One backend for all channels: a GPU failure on any channel sends every channel to the CPU."""

import logging
import sys
import types

import numpy as np
import pytest

from zemosaic_dask.errors import GpuUnavailableError
from zemosaic_dask.messages import set_language
from zemosaic_dask.tasks.blur import halo_width
from zemosaic_dask.tasks.two_pass import coverage_scale_map, layer_gain
from zemosaic_dask.units.two_pass_backend import gpu_error_types, run_channels_on_one_backend

LOGGERS = ("zemosaic_dask.units.two_pass_backend", "zemosaic_dask.units.gpu")
GPU_MARK = 1.0
CPU_MARK = 1000.0


@pytest.fixture(autouse=True)
def _english_messages():
    set_language("en")
    yield
    set_language("en")


@pytest.fixture
def channels():
    rng = np.random.default_rng(4)
    return [rng.uniform(1.0, 5.0, size=(12, 16)).astype(np.float32) for _ in range(3)]


class _Recorder:
    """gpu_fn / cpu_fn doubles that leave a marker in their results and count their calls."""

    def __init__(self, fake, fail_channel=None, error=None, nan_channel=None):
        self.fake, self.fail_channel, self.error, self.nan_channel = fake, fail_channel, error, nan_channel
        self.gpu_calls = 0
        self.cpu_calls = 0

    def gpu(self, device):
        assert isinstance(device, self.fake.FakeArray), "the GPU function must receive device arrays"
        index = self.gpu_calls
        self.gpu_calls += 1
        if index == self.fail_channel:
            raise self.error
        result = device + GPU_MARK
        if index == self.nan_channel:
            result[0, 0] = self.fake.nan
        return result

    def cpu(self, host):
        assert type(host) is np.ndarray
        self.cpu_calls += 1
        return host + CPU_MARK


def _fake_cuda_errors(fakecupy, monkeypatch):
    """Give the fake module cupy-like error classes (OOM derives from MemoryError, as in cupy)."""
    oom = type("OutOfMemoryError", (MemoryError,), {})
    cuda_error = type("CUDARuntimeError", (Exception,), {})  # not a builtin error type on purpose
    cuda = types.SimpleNamespace(
        memory=types.SimpleNamespace(OutOfMemoryError=oom), runtime=types.SimpleNamespace(CUDARuntimeError=cuda_error)
    )
    monkeypatch.setattr(fakecupy, "cuda", cuda, raising=False)
    return oom, cuda_error


def _records(caplog, level):
    return [r for r in caplog.records if r.name in LOGGERS and r.levelno == level]


@pytest.mark.parametrize("error_kind", ["oom", "cuda"])
def test_one_failing_channel_sends_every_channel_to_the_cpu(fakecupy, monkeypatch, caplog, channels, error_kind):
    oom, cuda_error = _fake_cuda_errors(fakecupy, monkeypatch)
    error = oom("out of memory allocating 1.2 GiB") if error_kind == "oom" else cuda_error("an illegal memory access")
    recorder = _Recorder(fakecupy, fail_channel=1, error=error)
    caplog.set_level(logging.INFO)
    run = run_channels_on_one_backend(channels, recorder.gpu, recorder.cpu, use_gpu=True, xp_gpu=fakecupy)
    assert recorder.gpu_calls == 2  # channel 0 succeeded, channel 1 failed, channel 2 never tried on the GPU
    assert recorder.cpu_calls == 3  # every channel recomputed, the GPU result of channel 0 discarded
    for result, channel in zip(run.results, channels, strict=True):
        assert type(result) is np.ndarray
        np.testing.assert_array_equal(result, channel + CPU_MARK)
    assert run.gpu_all is False
    assert "channel 1" in run.fallback_reason and type(error).__name__ in run.fallback_reason
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "recomputed on CPU" in warnings[0].getMessage()
    assert [r.getMessage() for r in _records(caplog, logging.INFO)] == ["[TwoPass] Coverage backend: gpu_all=False"]


def test_no_failure_keeps_every_channel_on_the_gpu(fakecupy, caplog, channels):
    recorder = _Recorder(fakecupy)
    caplog.set_level(logging.DEBUG)
    run = run_channels_on_one_backend(channels, recorder.gpu, recorder.cpu, use_gpu=True, xp_gpu=fakecupy)
    assert recorder.gpu_calls == 3 and recorder.cpu_calls == 0
    assert run.gpu_all is True and run.fallback_reason is None
    for result, channel in zip(run.results, channels, strict=True):
        assert type(result) is np.ndarray  # brought back to the host
        np.testing.assert_array_equal(result, channel + GPU_MARK)
    assert not _records(caplog, logging.WARNING)
    assert "[TwoPass] Coverage backend: gpu_all=True" in [r.getMessage() for r in _records(caplog, logging.INFO)]
    debug = [r.getMessage() for r in _records(caplog, logging.DEBUG)]
    for index, channel in enumerate(channels):
        low, high = float((channel + GPU_MARK).min()), float((channel + GPU_MARK).max())
        assert f"[TwoPass] channel {index} coverage min={low:.6g} max={high:.6g}" in debug


def test_use_gpu_false_never_touches_the_gpu(channels, caplog):
    class _Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the GPU module was used ({name}) although use_gpu is False")

    def gpu_fn(_):
        raise AssertionError("gpu_fn was called although use_gpu is False")

    calls = []
    caplog.set_level(logging.INFO)
    run = run_channels_on_one_backend(
        channels, gpu_fn, lambda c: calls.append(1) or c * 2, use_gpu=False, xp_gpu=_Untouchable()
    )
    assert len(calls) == 3 and run.gpu_all is False and run.fallback_reason is None
    np.testing.assert_array_equal(run.results[2], channels[2] * 2)
    assert not _records(caplog, logging.WARNING)


def test_non_finite_gpu_result_where_the_cpu_is_finite_abandons_the_gpu(fakecupy, caplog, channels):
    recorder = _Recorder(fakecupy, nan_channel=2)
    caplog.set_level(logging.INFO)
    run = run_channels_on_one_backend(channels, recorder.gpu, recorder.cpu, use_gpu=True, xp_gpu=fakecupy)
    assert run.gpu_all is False and "non-finite" in run.fallback_reason
    assert recorder.cpu_calls == 3  # the CPU result that settled it is reused, the others recomputed
    for result, channel in zip(run.results, channels, strict=True):
        np.testing.assert_array_equal(result, channel + CPU_MARK)
    assert len(_records(caplog, logging.WARNING)) == 1


def test_non_finite_values_the_cpu_also_gives_are_accepted(fakecupy, channels):
    channels[2][0, 0] = np.nan  # both backends give NaN there
    recorder = _Recorder(fakecupy)
    run = run_channels_on_one_backend(channels, recorder.gpu, recorder.cpu, use_gpu=True, xp_gpu=fakecupy)
    assert run.gpu_all is True
    np.testing.assert_array_equal(run.results[2], channels[2] + GPU_MARK)


def test_a_declared_non_finite_mask_decides_without_the_cpu(fakecupy, channels):
    channels[1][3, 4] = 0.0

    def allowed(host):
        return host == 0  # like the scale map: NaN where the coverage is 0

    def gpu_fn(device):
        return fakecupy.where(device == 0, fakecupy.nan, device + GPU_MARK)

    def gpu_fn_bad(device):
        result = gpu_fn(device)
        result[0, 0] = fakecupy.nan
        return result

    cpu_calls = []

    def cpu_fn(host):
        cpu_calls.append(1)
        return np.where(host == 0, np.nan, host + CPU_MARK)

    run = run_channels_on_one_backend(
        channels, gpu_fn, cpu_fn, use_gpu=True, xp_gpu=fakecupy, nonfinite_allowed=allowed
    )
    assert run.gpu_all is True and not cpu_calls
    assert np.isnan(run.results[1][3, 4]) and run.results[1][0, 0] == channels[1][0, 0] + GPU_MARK
    run = run_channels_on_one_backend(
        channels, gpu_fn_bad, cpu_fn, use_gpu=True, xp_gpu=fakecupy, nonfinite_allowed=allowed
    )
    assert run.gpu_all is False and len(cpu_calls) == 3
    assert run.results[1][0, 0] == channels[1][0, 0] + CPU_MARK


def test_an_unexpected_error_is_a_bug_and_propagates(fakecupy, channels):
    recorder = _Recorder(fakecupy, fail_channel=0, error=ValueError("wrong shape"))
    with pytest.raises(ValueError, match="wrong shape"):
        run_channels_on_one_backend(channels, recorder.gpu, recorder.cpu, use_gpu=True, xp_gpu=fakecupy)


def test_missing_cupy_falls_back_to_the_cpu(monkeypatch, channels, caplog):
    monkeypatch.setitem(sys.modules, "cupy", None)  # "import cupy" raises ImportError
    caplog.set_level(logging.INFO)
    run = run_channels_on_one_backend(channels, lambda x: x, lambda c: c + CPU_MARK, use_gpu=True, xp_gpu=None)
    assert run.gpu_all is False and "cupy" in run.fallback_reason
    np.testing.assert_array_equal(run.results[0], channels[0] + CPU_MARK)
    assert len(_records(caplog, logging.WARNING)) == 1


def test_gpu_error_types_adds_the_module_classes(fakecupy, monkeypatch):
    oom, cuda_error = _fake_cuda_errors(fakecupy, monkeypatch)
    found = gpu_error_types(fakecupy)
    assert {MemoryError, GpuUnavailableError, ImportError, oom, cuda_error} <= set(found)
    assert set(gpu_error_types(None)) == {MemoryError, GpuUnavailableError, ImportError}
    assert RuntimeError not in found  # a plain RuntimeError is a bug, not a GPU failure


def test_cpu_and_gpu_dispatch_give_equal_coverage_results(fakecupy):
    sigma = 5.0
    halo = halo_width(sigma)
    coverage = np.zeros((60, 80), np.float32)
    coverage[5:55, 5:50] = 3.0
    coverage[20:40, 30:75] += 5.0
    planes = [coverage, coverage * 0.5, np.where(coverage > 4, coverage, 0).astype(np.float32)]
    padded = [np.pad(plane, halo) for plane in planes]

    def gpu_fn(device):
        result = coverage_scale_map(device, halo, sigma)
        assert isinstance(result, fakecupy.FakeArray)  # computed in the device namespace
        return result

    def cpu_fn(host):
        return coverage_scale_map(host, halo, sigma)

    on_gpu = run_channels_on_one_backend(padded, gpu_fn, cpu_fn, use_gpu=True, xp_gpu=fakecupy)
    on_cpu = run_channels_on_one_backend(padded, gpu_fn, cpu_fn, use_gpu=False, xp_gpu=None)
    assert on_gpu.gpu_all and not on_cpu.gpu_all
    for gpu_scale, cpu_scale, plane in zip(on_gpu.results, on_cpu.results, planes, strict=True):
        np.testing.assert_array_equal(gpu_scale, cpu_scale)
        assert layer_gain(gpu_scale, plane) == layer_gain(cpu_scale, plane)


@pytest.mark.gpu
def test_real_cupy_runs_every_channel_on_the_gpu():
    import cupy as cp

    sigma = 20.0
    halo = halo_width(sigma)
    coverage = np.zeros((200, 240), np.float32)
    coverage[10:190, 10:150] = 4.0
    coverage[60:140, 100:230] += 9.0
    padded = [np.pad(coverage * factor, halo) for factor in (1.0, 0.5, 2.0)]
    run = run_channels_on_one_backend(
        padded,
        lambda device: coverage_scale_map(device, halo, sigma),
        lambda host: coverage_scale_map(host, halo, sigma),
        use_gpu=True,
        xp_gpu=cp,
    )
    assert run.gpu_all is True
    for result, plane in zip(run.results, padded, strict=True):
        np.testing.assert_allclose(result, coverage_scale_map(plane, halo, sigma), rtol=1e-5)
