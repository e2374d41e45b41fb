"""Checks shared by the kernel test files (imported by name: pytest puts this folder on sys.path)."""
import torch

from rnnkit.nn.scan import scan


def assert_parameter_grads_and_inference_match_scan(kernel, cell, x, state):
    """With no gradient wanted wrt ``x`` or the state, the kernel still gives every
    parameter the reference scan's gradient; under no_grad it gives the same outputs."""
    y, (h, c) = kernel(cell, cell.own_params(), x, state)
    (y.sum() + c.sum()).backward()
    got = [p.grad.clone() for p in cell.parameters()]
    cell.zero_grad()
    y_ref, (h_ref, c_ref) = scan(cell, cell.own_params(), x, state)
    (y_ref.sum() + c_ref.sum()).backward()
    for a, b in zip(got, (p.grad for p in cell.parameters())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # inference: no graph, same numbers
        y2, _ = kernel(cell, cell.own_params(), x, state)
    torch.testing.assert_close(y2, y_ref, atol=1e-5, rtol=1e-5)
