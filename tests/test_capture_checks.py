"""The Python checks under CUDA graph capture (SPEC §6, §8), tested on the CPU.

Under capture a host read of a device value is an error and a copy from host memory would be
replayed from a buffer that is gone. `_checks._is_capturing` is patched to say "capturing"; meta
tensors stand for device tensors: any read of their values raises, so a check that reads one under
"capture" fails these tests. tests/test_cuda.py captures and replays a whole training step on a GPU.
"""
import pytest
import torch

from lif_cuda import _checks

META = torch.device("meta")


@pytest.fixture
def capturing(monkeypatch):
    monkeypatch.setattr(_checks, "_is_capturing", lambda: True)


def test_not_capturing_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert _checks._is_capturing() is False


def test_parameter_values_are_not_read_under_capture(capturing, monkeypatch):
    checked = _checks.CheckedValues()
    p = torch.full((4,), float("nan"), device=META)
    checked.check([("threshold", p, False)])  # no read, no error
    assert not checked._valid, "a value skipped under capture was recorded as valid"
    monkeypatch.setattr(_checks, "_is_capturing", lambda: False)
    with pytest.raises((NotImplementedError, RuntimeError)):  # outside capture: read (meta cannot be)
        checked.check([("threshold", p, False)])


def test_a_bad_value_is_refused_after_the_capture():
    """The logic outside capture, on CPU tensors: a bad value is refused, a good one recorded once,
    an in-place change (an optimiser step) checked again."""
    checked = _checks.CheckedValues()
    p = torch.ones(3)
    checked.check([("tau_mem", p, True)])
    assert len(checked._valid) == 1
    p[1] = -1.0
    with pytest.raises(ValueError, match="tau_mem must be finite and > 0"):
        checked.check([("tau_mem", p, True)])


def test_device_lengths_are_not_read_under_capture(capturing):
    lengths = torch.tensor([3, 9], device=META)  # 9 > T: a read would find it, and raise
    assert _checks.to_lengths(lengths, 2, 5, META, checked_by_op=False) is lengths


def test_host_lengths_are_still_checked_under_capture(capturing):
    with pytest.raises(ValueError, match=r"lengths must be in \[0, T\]"):
        _checks.to_lengths([3, 9], 2, 5, torch.device("cuda"), checked_by_op=False)


def test_host_lengths_for_a_cuda_input_are_refused_under_capture(capturing):
    for lengths in ([3, 4], torch.tensor([3, 4])):
        with pytest.raises(ValueError, match=r"lengths is on the CPU.*CUDA graph.*pass lengths on cuda"):
            _checks.to_lengths(lengths, 2, 5, torch.device("cuda"), checked_by_op=False)
