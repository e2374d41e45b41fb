"""A small ONNX graph builder: nodes, initialisers and unique names, nothing else.

The exporters write ONNX the way the cells write torch: ``g.op("Sigmoid", a)``
returns the output's name, ``g.linear(x, W, b)`` is ``F.linear``. A subgraph (the
body of a ``Scan``) is a :meth:`Graph.sub`: its own nodes, but the parent's names and
initialisers, so a body reads the weights from the outer scope instead of copying them.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from ..errors import DtypeError


class Graph:
    """Nodes being collected for one ONNX graph (or a subgraph sharing its initialisers)."""

    def __init__(self, parent: Graph | None = None) -> None:
        from onnx import TensorProto, helper, numpy_helper  # imported late: onnx is the "export" extra

        self.helper, self.numpy_helper, self.TensorProto = helper, numpy_helper, TensorProto
        self.nodes: list = []
        self._root = parent._root if parent is not None else self
        if parent is None:
            self.initializers: list = []
            self._counter = itertools.count()
            self._cache: dict = {}

    def sub(self) -> Graph:
        """A subgraph builder: own nodes, the root's names and initialisers."""
        return Graph(parent=self)

    def name(self, hint: str) -> str:
        return f"{hint}_{next(self._root._counter)}"

    def op(self, op_type: str, *inputs: str | None, outputs: int = 1, **attrs):
        """Append one node; returns its output name (a list when ``outputs > 1``).
        ``None`` inputs are ONNX's omitted optional inputs (``""``)."""
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        inputs = list(inputs)
        while inputs and inputs[-1] is None:  # trailing omitted inputs are left out, not "":
            inputs.pop()                      # ONNX Runtime's SkipLayerNormFusion crashes on a "" bias
        self.nodes.append(self.helper.make_node(op_type, ["" if i is None else i for i in inputs], names,
                                                name=names[0], **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, hint: str = "const") -> str:
        """An initialiser holding ``value`` (a tensor, array or Python number/list)."""
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if array.dtype == np.float64 and not isinstance(value, np.ndarray):
            array = array.astype(np.float32)  # Python floats: the graph's float32
        key = (array.dtype.str, array.shape, array.tobytes())
        root = self._root
        if array.size <= 16 and key in root._cache:  # small constants (axes, splits) shared
            return root._cache[key]
        name = self.name(hint)
        root.initializers.append(self.numpy_helper.from_array(array.copy(order="C"), name))
        if array.size <= 16:
            root._cache[key] = name
        return name

    def weight(self, t: Tensor, hint: str, transpose: bool = False) -> str:
        """A layer's parameter as an initialiser (``W^T`` for a MatMul when ``transpose``)."""
        if t.dtype != torch.float32:
            raise DtypeError(f"export: parameter {hint} has dtype {t.dtype}; the ONNX export writes float32 "
                             f"graphs (convert the model with .float() first)")
        t = t.detach()
        return self.const(t.t().contiguous() if transpose else t, hint)

    # --- the few composites every cell uses ----------------------------------------
    def linear(self, x: str, w: str, b: str | None = None) -> str:
        """``F.linear``: ``x (*, I)`` times ``w``, an initialiser already holding ``W^T (I, O)``."""
        y = self.op("MatMul", x, w)
        return y if b is None else self.op("Add", y, b)

    def split(self, x: str, sizes: list[int]) -> list[str]:
        """``x.split(sizes, dim=-1)``."""
        return self.op("Split", x, self.const(np.array(sizes, dtype=np.int64), "split"),
                       outputs=len(sizes), axis=-1)

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.const(np.array([axis], dtype=np.int64), "axes"))

    def squeeze(self, x: str, axis: int) -> str:
        return self.op("Squeeze", x, self.const(np.array([axis], dtype=np.int64), "axes"))

    def lerp(self, a: str, b: str, w: str) -> str:
        """``torch.lerp(a, b, w) = a + w * (b - a)``."""
        return self.op("Add", a, self.op("Mul", w, self.op("Sub", b, a)))

    def graph(self, name: str, inputs: list, outputs: list):
        """This builder's nodes as a ``GraphProto`` (initialisers only on the root)."""
        inits = self.initializers if self._root is self else []
        return self.helper.make_graph(self.nodes, name, inputs, outputs, initializer=inits)

    def value(self, name: str, shape: list | None = None, elem: int | None = None):
        """A typed graph input or output (``shape`` None: any; strings are symbolic dims)."""
        return self.helper.make_tensor_value_info(name, self.TensorProto.FLOAT if elem is None else elem, shape)
