"""The kernel registry (rnnkit.kernels): registering a kernel makes find() pick it and a
layer run it, unregistering restores the previous path; a kernel whose match refuses an
input never runs on it; priority decides between kernels that both take an input; the
reasons are reported; nothing imports the layers (no cycle with rnnkit.nn.scan)."""
import subprocess
import sys

import pytest
import torch

import rnnkit
from rnnkit import kernels
from rnnkit.cells import ElmanCell, LSTMCell
from rnnkit.kernels import Kernel, Sample
from rnnkit.nn.scan import scan, scan_layers


class _Elman(ElmanCell):
    """An Elman cell torch.nn does not run (so a layer of it takes a kernel or the scan)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.torch_mode = None


def _toy(name="test.elman", calls=None, priority=0, refuse_batch=None):
    """A trivial kernel for :class:`_Elman`: the reference scan, recording the batch of
    each call; its match refuses batches of ``refuse_batch`` rows (with a reason)."""
    calls = [] if calls is None else calls

    def run(cell, p, x, state, mask=None, reverse=False):
        calls.append(x.shape[1])
        return scan(cell, p, x, state, mask, reverse)

    def match(cell, x, p, state, mask):
        return x.shape[1] != refuse_batch or f"batch of {refuse_batch}: refused"

    return Kernel(name, "cpu", run, lambda cell: type(cell) is _Elman or "not the test's Elman cell", match,
                  priority=priority, samples=(Sample("elman", lambda i, h, **kw: _Elman(i, h, **kw)),))


@pytest.fixture
def toy():
    """Registers the toy kernel for the test; unregistered after it even if the test fails."""
    calls = []
    kernel = kernels.register(_toy(calls=calls, refuse_batch=3))
    yield kernel, calls
    if kernel.name in {k.name for k in kernels.registered()}:
        kernels.unregister(kernel.name)


def test_registering_makes_find_pick_it_and_the_layer_run_it(toy):
    kernel, calls = toy
    cell = _Elman(3, 4)
    x = torch.randn(5, 2, 3)
    assert kernels.find(cell, x, cell.own_params()) is kernel
    torch.manual_seed(0)
    layer = rnnkit.Recurrent(_Elman, 3, 4, num_layers=2, bidirectional=True)
    ref = rnnkit.Recurrent(_Elman, 3, 4, num_layers=2, bidirectional=True, backend="scan")
    ref.load_state_dict(layer.state_dict())
    assert (layer.path, ref.path) == ("kernel", "scan")
    y, h = layer(x)
    assert calls == [2] * 4  # every layer and direction
    y_ref, h_ref = ref(x)
    torch.testing.assert_close(y, y_ref)
    kernels.unregister(kernel.name)
    assert layer.path == "scan"  # the next forward runs the reference
    layer(x)
    assert calls == [2] * 4


def test_unregistering_restores_the_reference(toy):
    kernel, _ = toy
    cell = _Elman(3, 4)
    x = torch.randn(5, 2, 3)
    assert kernels.unregister(kernel.name) is kernel
    assert kernels.find(cell, x, cell.own_params()) is None
    assert kernel.name not in {k.name for k in kernels.registered()}
    with pytest.raises(KeyError, match="no kernel 'test.elman'"):
        kernels.unregister(kernel.name)


def test_a_refused_input_never_runs_on_the_kernel(toy):
    kernel, calls = toy
    cell = _Elman(3, 4)
    x = torch.randn(5, 3, 3)  # batch 3: the toy's match says no
    assert kernels.find(cell, x, cell.own_params()) is None
    assert dict(kernels.explain(cell, x, cell.own_params()))[kernel.name] == "batch of 3: refused"
    # through the layer stack: the reference runs, the kernel is never called
    y, _ = scan_layers([cell], [[cell.own_params()]], x, [[cell.init_state(3)]])
    torch.testing.assert_close(y, scan(cell, cell.own_params(), x, cell.init_state(3))[0])
    assert calls == []
    scan_layers([cell], [[cell.own_params()]], x[:, :2], [[cell.init_state(2)]])
    assert calls == [2]  # batch 2: taken


def test_priority_decides_and_reregistering_replaces(toy):
    kernel, calls = toy
    cell = _Elman(3, 4)
    x = torch.randn(2, 2, 3)
    other_calls = []
    high = kernels.register(_toy("test.elman.high", calls=other_calls, priority=5))
    try:
        assert kernels.find(cell, x, cell.own_params()) is high
        assert [k.name for k in kernels.registered()].index("test.elman.high") < \
            [k.name for k in kernels.registered()].index("test.elman")
        low = kernels.register(_toy("test.elman.high", calls=other_calls, priority=-5))  # same name: replaced
        assert kernels.find(cell, x, cell.own_params()) is kernel
        assert [k.name for k in kernels.registered()].count("test.elman.high") == 1 and low in kernels.registered()
    finally:
        kernels.unregister("test.elman.high")


def test_builtin_kernels_are_registered_with_samples():
    names = {k.name: k for k in kernels.registered()}
    assert {"linear_scan", "cpu.lstm", "cpu.gru", "triton.lstm", "triton.gru"} <= set(names)
    assert all(k.samples for k in names.values())
    order = [k.name for k in kernels.registered()]
    assert order.index("triton.lstm") < order.index("cpu.lstm")  # on CUDA (or interpreted) Triton first


def test_state_and_mask_the_kernels_cannot_take_are_refused_with_a_reason():
    """A (1, S) state (the reference broadcasts it) or a non-bool mask: the reference runs."""
    cell = LSTMCell(4, 6, peephole=True)
    x = torch.randn(5, 3, 4)
    p = cell.own_params()
    broadcast = tuple(torch.zeros(1, n) for n in cell.state_sizes())
    assert kernels.find(cell, x, p, broadcast) is None
    reasons = dict(kernels.explain(cell, x, p, broadcast))
    assert "state shapes" in reasons["cpu.lstm"]
    mask = torch.ones(5, 3, 1)
    assert kernels.find(cell, x, p, cell.init_state(3), mask) is None
    assert "mask" in dict(kernels.explain(cell, x, p, cell.init_state(3), mask))["cpu.lstm"]


def test_no_import_cycle():
    """The kernels import no layer code: importing them first, alone, works."""
    code = ("import sys, rnnkit.kernels\n"
            "assert not any(m.startswith('rnnkit.nn') for m in sys.modules), sorted(sys.modules)\n"
            "import rnnkit.nn.scan\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
