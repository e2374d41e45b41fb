"""Any exportable cell over time as an ONNX ``Scan``: the generic path, the ONNX twin
of :func:`rnnkit.kernels.reference.scan`.

The input projection runs once for all steps outside the loop (as the reference
hoists it); the ``Scan`` body is the cell's ``recur`` (:mod:`.cells`), then zoneout's
evaluation expectation, then the length mask: at a padded step the state is carried
and the output is 0, selected with ``Where`` (never multiplied: ``NaN * 0`` is NaN),
so each sequence's final state is its state at its last real step. The reverse
direction scans backwards (``scan_input_directions``) and writes its outputs back in
time order (``scan_output_directions``). The body reads the weights from the outer
graph, so they are stored once.
"""
from __future__ import annotations

from .cells import Params, emitter
from .graph import Graph


def zone_rates(layer) -> list[float]:
    """Per state, its zoneout rate (0: none); evaluation uses ``z * old + (1 - z) * new``."""
    zone = layer.regularization.zoneout
    return [zone.get(n, 0.0) for n in layer.cells[0].state_names]


def _step(g: Graph, cell, p: Params, xp: str, state: list[str], zone: list[float]):
    """One step in ``g``: recur, then zoneout (as :func:`~rnnkit.kernels.reference.zone_state`)."""
    _, recur = emitter(cell)
    y, new = recur(g, cell, p, xp, state)
    output_is_state = y == new[0]
    new = [g.lerp(n, o, g.const(z)) if z else n for n, o, z in zip(new, state, zone)]
    return (new[0] if output_is_state else y), new


def scan_direction(g: Graph, layer, k: int, d: int, x: str, mask: str | None, state: list[str]):
    """Layer ``k``, direction ``d`` on ``x (T, B, I)`` from ``state`` (each ``(B, S)``);
    ``mask (T, B, 1)`` bool or None. Returns ``(y (T, B, O), final state)``."""
    cell = layer.cells[k]
    p = Params(g, layer._params(k, d), f"l{k}{'_reverse' if d else ''}")
    project, _ = emitter(cell)
    xp = project(g, cell, p, x)
    body = g.sub()
    s_in = [body.name(f"{n}_prev") for n in cell.state_names]
    xp_t = body.name("xp_t")
    m_t = body.name("mask_t") if mask is not None else None
    y, new = _step(body, cell, p, xp_t, s_in, zone_rates(layer))
    if m_t is not None:
        new = [body.op("Where", m_t, n, o) for n, o in zip(new, s_in)]
        y = body.op("Where", m_t, y, body.const(0.0))
    outs = [body.op("Identity", n) for n in new] + [body.op("Identity", y)]  # distinct output names
    inputs = [body.value(n) for n in s_in] + [body.value(xp_t)]
    if m_t is not None:
        inputs.append(body.value(m_t, elem=body.TensorProto.BOOL))
    graph = body.graph(body.name("scan_body"), inputs, [body.value(n) for n in outs])
    n_scan = 1 if mask is None else 2
    results = g.op("Scan", *state, xp, *([mask] if mask is not None else []), outputs=len(state) + 1,
                   body=graph, num_scan_inputs=n_scan, scan_input_directions=[d] * n_scan,
                   scan_output_directions=[d])
    return results[-1], list(results[:-1])


def step_direction(g: Graph, layer, k: int, x: str, state: list[str]):
    """One step of layer ``k`` (unidirectional) inline: ``x (B, I)`` -> ``(y (B, O), state)``."""
    cell = layer.cells[k]
    p = Params(g, layer._params(k, 0), f"l{k}")
    project, _ = emitter(cell)
    return _step(g, cell, p, project(g, cell, p, x), state, zone_rates(layer))
