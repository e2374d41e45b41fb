"""The generic recurrent layer: any cell, stacked and/or bidirectional, with
torch.nn's interface, parameter names and state_dict."""
from __future__ import annotations

import numbers
import re
from types import SimpleNamespace
from typing import Callable

import torch
from torch import Tensor, nn
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..cells.base import Params, RecurrentCell, built_for, check_bool, params_namespace
from ..errors import ArgumentError, ArgumentTypeError, DtypeError, ShapeError
from . import checks, dispatch
from .init import INIT_SCHEMES, init_cell_parameters
from .regularization import (RATES, drop_weight, locked_dropout, make_regularization, probe_masks,
                             recurrent_weight_name, step_masks)
from .scan import scan_layers
from . import native_step, streaming

HiddenState = Tensor | tuple[Tensor, ...]
#: constructor arguments shared with torch.nn.RNN/LSTM/GRU, same names and meaning
TORCH_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")


class Recurrent(nn.Module):
    r"""Runs any :class:`~rnnkit.cells.RecurrentCell` over time, layers and directions.

    Args:
        cell: the cell class (or a factory ``(input_size, hidden_size, bias=, own_parameters=, **kw)``).
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional:
            as in ``torch.nn.LSTM``.
        init: ``"torch"`` (default, as torch.nn), ``"orthogonal"``, ``"identity"`` (IRNN),
            ``"xavier"``; see :mod:`rnnkit.nn.init`. ``init_gain`` scales it.
        forget_bias: initial forget-gate bias (cells with a forget gate).
        learn_initial_state: learn ``h0`` (and ``c0``) per layer and direction, used
            when no ``hx`` is given; stored as ``initial_h (L*D, S)`` etc.
        backend: ``"auto"`` (torch.nn's fused kernel when the configuration allows,
            else a fused rnnkit kernel when one exists, else the reference scan),
            ``"torch"`` (require the fused torch kernel; a custom cell is refused here),
            ``"scan"`` (force the reference loop) or ``"triton"`` (as ``"auto"``, plus the
            Triton kernels on CUDA, which ``"auto"`` runs only with ``RNNKIT_TRITON=1``;
            only for cells that have one). :attr:`path` says which runs.
        input_dropout, hidden_dropout, output_dropout: variational dropout (one mask per
            sequence, the same at every step; Gal & Ghahramani 2016) on the first layer's
            input, between layers, and on the last layer's output.
        recurrent_dropout: variational dropout on the state where it enters the recurrent
            weights (the carried state itself is not dropped).
        zoneout: Krueger et al. 2017: a rate for every state, or per state name
            (``{"h": 0.05, "c": 0.5}``); at evaluation the expectation.
        weight_drop: DropConnect on the recurrent weight matrices (Merity et al. 2018),
            one mask per forward call. See :mod:`rnnkit.nn.regularization`; every rate is
            in ``[0, 1)`` and all 0 (the default) leaves the layer exactly as without.
        **cell_kwargs: forwarded to the cell (``nonlinearity=``, ``peephole=``, ...).

    Inputs: ``input, hx=None, lengths=None, *, reset=None``
        * ``input``: ``(T, B, I)``, ``(B, T, I)`` if ``batch_first``, unbatched ``(T, I)``,
          or a ``PackedSequence``.
        * ``hx``: initial state, a tensor ``(L*D, B, S)`` for one-state cells or a tuple
          ``(h0, c0)`` for the LSTM; zeros (or the learned state) if omitted.
        * ``lengths``: ``(B,)`` real lengths of a padded batch; padded steps are masked
          exactly (final state = state at each sequence's last real step, outputs there 0).
        * ``reset``: streaming a batch of independent streams chunk by chunk, the streams
          that restart. A bool ``(B,)``: those streams begin this chunk from the initial
          state (zeros, or the learned one) instead of ``hx``; or a bool ``(T, B)``
          (``(B, T)`` if ``batch_first``; ``()``/``(T,)`` unbatched): the state is reset
          just before each marked step. See :meth:`step` and :meth:`init_state`.

    Outputs: ``output, h_n``
        * ``output``: ``(T, B, D*O)`` (or batch-first / packed, like the input), the last
          layer's outputs;
        * ``h_n``: final state, same layout as ``hx``.

    Parameters follow torch.nn: ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``, ``weight_hr_l{k}``, suffixed ``_reverse`` for the backward direction,
    plus the cell's extras under the same scheme (e.g. ``weight_ci_l0``); ``all_weights``,
    ``_flat_weights``, ``_flat_weights_names`` and :meth:`flatten_parameters` as torch.nn's.

    Errors: constructor arguments are checked as ``torch.nn.RNNBase`` checks them (same
    exception types, torch's message after the layer's name), boolean options included;
    wrong inputs raise :mod:`rnnkit.errors` types that subclass what torch.nn raises.
    """

    def __init__(self, cell: type[RecurrentCell] | Callable[..., RecurrentCell], input_size: int,
                 hidden_size: int, num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, init: str = "torch",
                 init_gain: float = 1.0, forget_bias: float | None = None,
                 learn_initial_state: bool = False, backend: str = "auto",
                 input_dropout: float = 0.0, hidden_dropout: float = 0.0, output_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, zoneout: float | dict[str, float] = 0.0,
                 weight_drop: float = 0.0, device=None, dtype=None, **cell_kwargs) -> None:
        super().__init__()
        name = type(self).__name__
        checks.check_layer_args(name, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                                bidirectional)
        if init not in INIT_SCHEMES:
            raise ArgumentError(f"{name}: init must be one of {INIT_SCHEMES}, got {init!r}")
        for arg, value, optional in (("init_gain", init_gain, False), ("forget_bias", forget_bias, True)):
            if not (optional and value is None) and (not isinstance(value, numbers.Real) or isinstance(value, bool)):
                raise ArgumentTypeError(f"{name}: {arg} should be a real number{' or None' if optional else ''}, "
                                        f"got: {type(value).__name__}")
        check_bool(name, "learn_initial_state", learn_initial_state)
        if backend not in dispatch.BACKENDS:
            raise ArgumentError(f"{name}: backend must be one of {dispatch.BACKENDS}, got {backend!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout, self.backend = float(dropout), backend
        self.init, self.init_gain, self.forget_bias = init, init_gain, forget_bias
        self.learn_initial_state = learn_initial_state
        self.num_directions = 2 if bidirectional else 1

        cells, size = [], input_size
        for _ in range(num_layers):
            c = _build_cell(name, cell, size, hidden_size, bias, cell_kwargs)
            cells.append(c)
            size = c.output_size * self.num_directions
        self.cells = nn.ModuleList(cells)  # parameterless: they hold the equations
        #: as torch.nn.LSTM's (0 = no projection); torch.nn.RNN and GRU have it too
        self.proj_size = getattr(self.cells[0], "proj_size", 0)
        self.regularization = make_regularization(
            name, self.cells[0], input_dropout=input_dropout, hidden_dropout=hidden_dropout,
            output_dropout=output_dropout, recurrent_dropout=recurrent_dropout, zoneout=zoneout,
            weight_drop=weight_drop)
        dispatch.check_backend(self)
        if forget_bias is not None and self.cells[0].forget_gate is None:
            raise ArgumentError(f"{name}: forget_bias needs a cell with a forget gate; {name} has none")
        if forget_bias is not None and not bias:
            raise ArgumentError(f"{name}: forget_bias needs bias=True")
        self._param_names: list[list[dict[str, str]]] = []
        for k, c in enumerate(self.cells):
            per_dir = []
            for d in range(self.num_directions):
                names = {p: f"{p}_l{k}{'_reverse' if d else ''}" for p in c.parameter_shapes()}
                for p, shape in c.parameter_shapes().items():
                    self.register_parameter(names[p], nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
                per_dir.append(names)
            self._param_names.append(per_dir)
        if learn_initial_state:
            for s, n in zip(self.cells[0].state_names, self._state_sizes()):
                self.register_parameter(f"initial_{s}", nn.Parameter(
                    torch.zeros(num_layers * self.num_directions, n, device=device, dtype=dtype)))
        if dropout > 0 and num_layers == 1:
            import warnings
            warnings.warn(f"{name}: dropout={dropout} acts between layers and num_layers=1, so it does nothing")
        self.reset_parameters()
        self.flatten_parameters()

    # --- parameters ----------------------------------------------------------------
    def reset_parameters(self) -> None:
        for k, cell in enumerate(self.cells):
            for names in self._param_names[k]:
                init_cell_parameters(cell, {p: getattr(self, n) for p, n in names.items()},
                                     self.init, self.init_gain, self.forget_bias)

    def _params(self, k: int, d: int, replaced: dict[str, Tensor] | None = None) -> Params:
        """Layer ``k``, direction ``d``'s parameters under the cell's names; ``replaced``
        maps full names to tensors used instead (weight-dropped copies)."""
        names, replaced = self._param_names[k][d], replaced or {}
        return params_namespace(names, {p: replaced.get(n, getattr(self, n)) for p, n in names.items()})

    def flat_weights(self) -> list[Tensor]:
        """Parameters in torch.nn's ``_flat_weights`` order (layer, direction, name)."""
        return [getattr(self, n) for n in self._flat_weights_names]

    # torch.nn.RNNBase's weight attributes. Code written for torch.nn reads them (weight
    # norm checks, weight copies, quantisation, ONNX export...). Derived from the parameter
    # names on every access, so they follow .to(), weight_norm's plain-tensor weights,
    # parametrizations and functional_call, and old pickles need nothing new.
    @property
    def _flat_weights_names(self) -> list[str]:
        return [n for per_dir in self._param_names for names in per_dir for n in names.values()]

    @property
    def _all_weights(self) -> list[list[str]]:
        return [list(names.values()) for per_dir in self._param_names for names in per_dir]

    @property
    def _flat_weights(self) -> list[Tensor]:
        return self.flat_weights()

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """As torch.nn: per (layer, direction), that direction's weights in order
        (``[w_ih, w_hh, b_ih, b_hh, w_hr]``, then the cell's extras)."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """As torch.nn: on CUDA with cuDNN, lay a torch.nn configuration's weights out in one
        contiguous buffer (cuDNN's layout; torch warns on every call otherwise). A no-op on
        CPU and for custom cells, which no cuDNN kernel runs. Runs torch.nn's own code."""
        mode = self.cells[0].torch_mode
        if mode is None:
            return
        view = SimpleNamespace(_flat_weights=self._flat_weights, _flat_weights_names=self._flat_weights_names,
                               mode=mode, **{k: getattr(self, k) for k in (*TORCH_ARGS, "proj_size")})
        nn.RNNBase.flatten_parameters(view)  # type: ignore[arg-type]

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "proj_size" not in self.__dict__:  # pickled before layers had torch.nn's proj_size
            self.proj_size = getattr(self.cells[0], "proj_size", 0)

    def _apply(self, fn, recurse=True):
        """As torch.nn: after ``.to()``/``.cuda()``/``.double()``..., re-flatten the weights."""
        result = super()._apply(fn, recurse)
        self.flatten_parameters()
        return result

    def _state_sizes(self) -> tuple[int, ...]:
        return self.cells[-1].state_sizes()

    # --- dispatch ------------------------------------------------------------------
    def has_kernel(self) -> bool:
        """Whether a fused rnnkit kernel runs this cell on the parameters' device and dtype
        (the ``"kernel"`` path): one exists, the backend allows it, and a Triton kernel
        only on request (``backend="triton"`` or ``RNNKIT_TRITON=1``; see :mod:`.dispatch`)."""
        p = self._params(0, 0)
        probe = torch.empty(1, 1, self.input_size, device=p.weight_ih.device, dtype=p.weight_ih.dtype)
        if self.regularization.steps_masked(self.training):  # can the kernel take the step masks?
            p = p.replace(**vars(probe_masks(self.regularization, self.cells[0], probe,
                                                              self.training)))
        return dispatch.kernel_for(self, probe, p) is not None

    @property
    def path(self) -> str:
        """The path :meth:`forward` runs: ``"torch"``, ``"kernel"`` or ``"scan"``."""
        return dispatch.choose_path(self)

    @property
    def fused(self) -> bool:
        """True when PyTorch's fused cuDNN/oneDNN kernel runs this layer."""
        return self.path == "torch"

    # --- forward -------------------------------------------------------------------
    def forward(self, input: Tensor | PackedSequence, hx: HiddenState | None = None,
                lengths: Tensor | None = None, *, reset: Tensor | None = None):
        if lengths is None and reset is None:  # a stream's one-step chunk in evaluation: the C steps
            done = native_step.fast_forward(self, input, hx)
            if done is not None:
                return done
        name = type(self).__name__
        weight = self.weight_ih_l0
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ArgumentError(f"{name}: pass lengths= only with a padded tensor, not a PackedSequence")
            checks.check_input(name, packed.data.unsqueeze(0), self.input_size, False, weight, packed=True)
            x, lengths = pad_packed_sequence(packed)
            batched = True
        else:
            checks.check_input(name, input, self.input_size, self.batch_first, weight)
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        if lengths is not None and packed is None:
            lengths = checks.check_lengths(name, lengths, B, T)
            lengths = None if B == 0 else lengths  # an empty batch has nothing to mask (or pack)
        h0 = self._initial_state(hx, B, batched, x)
        if reset is None:
            out, finals = self._run(x, h0, lengths)
        else:
            reset = streaming.check_reset(name, reset, T, B, batched, self.batch_first and packed is None, x.device)
            out, finals = self._run_reset(x, h0, lengths, reset)
        return self._format_output(out, finals, packed, lengths, batched)

    def _run(self, x: Tensor, h0: tuple[Tensor, ...], lengths: Tensor | None):
        if self.regularization.active:
            return self._run_regularized(x, h0, lengths)
        if dispatch.runs_torch_on(self, lengths):
            return dispatch.run_torch(self, x, h0, lengths)
        return self._run_scan(x, h0, lengths)

    def _run_reset(self, x: Tensor, h0: tuple[Tensor, ...], lengths: Tensor | None, reset: Tensor):
        """Forward where some streams restart (``reset``, see the class doc). A per-step
        reset cuts the chunk at each step where some stream restarts and runs the pieces
        in turn on the layer's own path (so with regularisation in training, each piece
        draws its own variational masks, as separate chunks would)."""
        name = type(self).__name__
        initial = self._initial_state(None, x.shape[1], True, x)
        if reset.dim() == 1:
            return self._run(x, streaming.apply_reset(h0, initial, reset), lengths)
        if self.bidirectional:
            raise ArgumentError(f"{name}: a per-step reset needs a unidirectional layer (the reverse "
                                f"direction would carry state across the restart); pass reset (batch,) "
                                f"per chunk, or split the chunk")
        cuts, outs, state = streaming.reset_segments(reset), [], h0
        for a, b in zip(cuts, cuts[1:]):
            carried, state = state, streaming.apply_reset(state, initial, reset[a])
            seg_lengths, done = None, None
            if lengths is not None:  # a stream already past its length carries its state, outputs 0
                seg_lengths = (lengths - a).clamp(1, b - a)
                done = (lengths <= a).to(x.device)
                if not bool(done.any()) and bool((seg_lengths == b - a).all()):
                    seg_lengths, done = None, None
            out, new = self._run(x[a:b], state, seg_lengths)
            if done is not None:
                new = streaming.apply_reset(new, carried, done)  # (a restart in the padding is none)
                out = out.masked_fill(done.view(1, -1, 1), 0.0)
            outs.append(out)
            state = new
        return torch.cat(outs), state

    # --- streaming -----------------------------------------------------------------
    def init_state(self, batch_size: int, *, device=None, dtype=None) -> HiddenState:
        """The state a stream starts from, in ``hx``'s layout: a tensor ``(L*D, B, S)``, or
        ``(h, c)`` for the LSTM; zeros, or the learned initial state (differentiable) with
        ``learn_initial_state``. ``device``/``dtype`` default to the parameters'."""
        name = type(self).__name__
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0:
            raise ArgumentError(f"{name}.init_state: batch_size must be an int >= 0, got {batch_size!r}")
        w = self.weight_ih_l0
        like = torch.empty(0, device=w.device if device is None else device, dtype=w.dtype if dtype is None else dtype)
        state = tuple(s.to(like) for s in self._initial_state(None, batch_size, True, like))
        return state[0] if len(state) == 1 else state

    def step(self, x_t: Tensor, state: HiddenState | None = None, *, reset: Tensor | None = None):
        r"""One time step: ``x_t (B, I)`` (or unbatched ``(I,)``), ``state`` as :meth:`init_state`
        returns it (None: the initial state) -> ``(y_t (B, O), state)``, ``y_t`` the last
        layer's output; ``reset (B,)`` bool: those streams restart (from the initial state). Feeding a sequence step by step, in chunks through :meth:`forward`
        (carrying the state) or whole gives the same outputs and final state.

        Built for latency at small batch: without gradients, at most
        :data:`~rnnkit.nn.native_step.NATIVE_MAX_BATCH` streams, one C call per layer on
        weights bound once (:mod:`rnnkit.nn.native_step`; a stream's later steps skip the
        checks its first step passed); otherwise ATen's fused cells for torch.nn
        configurations and the cell's reference step for the others (see
        :mod:`rnnkit.nn.streaming`). Unidirectional layers only: a bidirectional layer's
        reverse direction needs the rest of the sequence. In training, regularisation
        (dropout masks, zoneout) is drawn per step, as a forward on a one-step chunk does.
        """
        if reset is None:  # a stream stepping in evaluation mode, as its last step did: no re-checks
            done = native_step.fast_step(self, x_t, state)
            if done is not None:
                return done
        name = type(self).__name__
        if self.bidirectional:
            raise ArgumentError(f"{name}.step: a bidirectional layer cannot run step by step (its reverse "
                                f"direction reads the future); run forward on the whole sequence")
        w = self._parameters.get("weight_ih_l0")
        w = self.weight_ih_l0 if w is None else w  # (parametrised: computed)
        if not isinstance(x_t, Tensor):
            raise TypeError(f"{name}.step: x_t must be a Tensor, got {type(x_t).__name__}")
        if x_t.dim() not in (1, 2) or x_t.shape[-1] != self.input_size:
            raise ShapeError(f"{name}.step: x_t has shape {tuple(x_t.shape)}, expected (batch, input_size) or "
                             f"(input_size,) with input_size={self.input_size}")
        if x_t.dtype != w.dtype and not torch._C._is_any_autocast_enabled():
            raise DtypeError(f"{name}.step: x_t has dtype {x_t.dtype}, expected the parameters' {w.dtype}")
        if x_t.device != w.device:
            checks.check_device(f"{name}.step", "x_t", x_t, w)
        batched = x_t.dim() == 2
        x = x_t if batched else x_t.unsqueeze(0)
        B, L = x.shape[0], self.num_layers
        plan = streaming.plan(self)
        if state is None:
            states = self._initial_state(None, B, True, x)
        else:
            expected = [torch.Size((L, B, n) if batched else (L, n)) for n in plan.state_sizes]
            states = streaming.check_step_state(name, state, plan.state_names, expected, w)
            if not batched:
                states = tuple(s.unsqueeze(1) for s in states)
        if reset is not None:
            reset = streaming.check_reset(f"{name}.step", reset, 1, B, batched, False, x.device)
            if reset.dim() != 1:
                raise ShapeError(f"{name}.step: reset has shape {tuple(reset.shape)}, expected "
                                 f"{(B,) if batched else ()} (one flag per stream)")
            states = streaming.apply_reset(states, self._initial_state(None, B, True, x), reset)
        reg = self.regularization
        if reg.steps_masked(self.training) or (self.training and reg.active):
            out, finals = self._run(x.unsqueeze(0), states, None)  # the masks of a one-step chunk
            y = out[0]
        else:
            y, finals = streaming.step_layers(self, x, states)
        if not batched:
            y, finals = y[0], tuple(f[:, 0] for f in finals)
        return y, (finals[0] if len(finals) == 1 else finals)

    def _initial_state(self, hx: HiddenState | None, B: int, batched: bool, x: Tensor) -> tuple[Tensor, ...]:
        """Initial states as a tuple of ``(L*D, B, S)`` tensors."""
        LD, names, sizes = self.num_layers * self.num_directions, self.cells[0].state_names, self._state_sizes()
        if hx is None:
            if self.learn_initial_state:
                return tuple(getattr(self, f"initial_{s}").unsqueeze(1).expand(LD, B, n).contiguous()
                             for s, n in zip(names, sizes))
            return tuple(x.new_zeros(LD, B, n) for n in sizes)
        hx = (hx,) if isinstance(hx, Tensor) else tuple(hx)
        expected = [(LD, B, n) if batched else (LD, n) for n in sizes]
        checks.check_state(type(self).__name__, hx, names, expected, self.weight_ih_l0)
        return hx if batched else tuple(h.unsqueeze(1) for h in hx)

    def _run_scan(self, x: Tensor, h0: tuple[Tensor, ...], lengths: Tensor | None,
                  dropped: dict[str, Tensor] | None = None):
        D, reg = self.num_directions, self.regularization
        params = [[self._params(k, d, dropped) for d in range(D)] for k in range(self.num_layers)]
        states = [[tuple(s[k * D + d] for s in h0) for d in range(D)] for k in range(self.num_layers)]
        if reg.steps_masked(self.training):  # masks drawn here, whichever loop consumes them
            params = [[p.replace(**vars(step_masks(reg, self.cells[k], x, self.training)))
                       for p in per_dir] for k, per_dir in enumerate(params)]
        use_kernels = dispatch.use_kernels(self, x, params[0][0])  # a kernel that cannot take the masks says no
        hidden_dropout = reg.hidden_dropout if self.training else 0.0
        out, finals = scan_layers(list(self.cells), params, x, states, lengths, self.dropout, self.training,
                                  use_kernels=use_kernels, hidden_dropout=hidden_dropout)
        flat = [state for layer in finals for state in layer]
        return out, tuple(torch.stack([st[i] for st in flat]) for i in range(len(h0)))

    def _run_regularized(self, x: Tensor, h0: tuple[Tensor, ...], lengths: Tensor | None):
        """Forward with :attr:`regularization`: variational input/output dropout around the
        stack, weight drop on the recurrent matrices, and either PyTorch's kernel (no step
        masks: one call, or one per layer when variational dropout sits between them) or
        the scan (recurrent dropout, zoneout)."""
        reg, training = self.regularization, self.training
        if training and reg.input_dropout:
            x = locked_dropout(x, reg.input_dropout, True)
        dropped = self._dropped_recurrent_weights() if training and reg.weight_drop else {}
        if dispatch.runs_torch_on(self, lengths):
            out, finals = self._run_torch_by_layer(x, h0, lengths, dropped)
        else:
            out, finals = self._run_scan(x, h0, lengths, dropped)
        if training and reg.output_dropout:
            out = locked_dropout(out, reg.output_dropout, True)
        return out, finals

    def _dropped_recurrent_weights(self) -> dict[str, Tensor]:
        """Full parameter name -> its DropConnect copy, for every recurrent matrix."""
        which = recurrent_weight_name(self.cells[0])
        return {names[which]: drop_weight(getattr(self, names[which]), self.regularization.weight_drop, True)
                for per_dir in self._param_names for names in per_dir}

    def _run_torch_by_layer(self, x: Tensor, h0: tuple[Tensor, ...], lengths: Tensor | None,
                            dropped: dict[str, Tensor]):
        """PyTorch's kernel on the (weight-dropped) parameters; layer by layer when
        variational dropout acts between layers (torch.nn's own dropout there is not)."""
        weights = [dropped.get(n, getattr(self, n)) for n in self._flat_weights_names]
        p_between = self.regularization.hidden_dropout if self.training else 0.0
        if not p_between or self.num_layers == 1:
            return dispatch.run_torch(self, x, h0, lengths, weights)
        D, per_layer = self.num_directions, len(weights) // self.num_layers
        finals = []
        for k in range(self.num_layers):
            if k > 0:
                x = locked_dropout(F.dropout(x, self.dropout, self.training), p_between, True)
            hx = tuple(h[k * D:(k + 1) * D] for h in h0)
            x, layer_finals = dispatch.run_torch(self, x, hx, lengths, weights[k * per_layer:(k + 1) * per_layer],
                                                 num_layers=1)
            finals.append(layer_finals)
        return x, tuple(torch.cat([f[i] for f in finals]) for i in range(len(h0)))

    def _format_output(self, out: Tensor, finals: tuple[Tensor, ...], packed: PackedSequence | None,
                       lengths: Tensor | None, batched: bool):
        if packed is not None:
            # keep the caller's packing exactly (same order of data, same index tensors)
            order = packed.sorted_indices
            padded = out if order is None else out.index_select(1, order)
            sorted_lengths = lengths if order is None else lengths[order.cpu()]
            data = pack_padded_sequence(padded, sorted_lengths, enforce_sorted=True).data
            out = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        elif not batched:
            out = out.squeeze(1)
            finals = tuple(f.squeeze(1) for f in finals)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, (finals[0] if len(finals) == 1 else finals)

    def to_torch(self) -> nn.RNNBase:
        """The ``torch.nn`` module with a copy of this layer's weights (also
        :func:`rnnkit.nn.interop.to_torch`). Only torch.nn configurations convert (no
        peepholes, layer norm, GRU variants or learned h0).

        Defined here rather than in :mod:`~rnnkit.nn.interop`: it needs nothing but
        this class and torch.nn, while interop imports the concrete layers, which
        import this module.
        """
        mode = self.cells[0].torch_mode
        if mode is None or self.learn_initial_state:
            raise ArgumentError(f"to_torch: {type(self).__name__}({self.extra_repr()}) has no torch.nn "
                             "equivalent (custom cell or learned initial state)")
        kwargs = {k: getattr(self, k) for k in TORCH_ARGS}
        w = self.weight_ih_l0
        kwargs |= {"device": w.device, "dtype": w.dtype}
        if mode == "LSTM":
            module = nn.LSTM(proj_size=self.cells[0].proj_size, **kwargs)
        elif mode == "GRU":
            module = nn.GRU(**kwargs)
        else:
            module = nn.RNN(nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kwargs)
        module.load_state_dict(self.state_dict())
        return module

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        for key, default in (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False), ("init", "torch"), ("forget_bias", None),
                             ("learn_initial_state", False), ("backend", "auto")):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        reg = getattr(self, "regularization", None)  # absent while __init__ reports an error
        for key in RATES if reg is not None else ():
            if getattr(reg, key):
                s += f", {key}={getattr(reg, key)!r}"
        if reg is not None and reg.zoneout:
            s += f", zoneout={reg.zoneout!r}"
        return s


def _build_cell(name: str, cell, input_size: int, hidden_size: int, bias: bool, kwargs: dict) -> RecurrentCell:
    """One parameterless cell of layer ``name``; its constructor errors name the layer."""
    try:
        with built_for(name):
            return cell(input_size, hidden_size, bias=bias, own_parameters=False, **kwargs)
    except TypeError as e:  # a misspelt option: say which layer, not which internal cell class
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if m is None:
            raise
        raise TypeError(f"{name}.__init__() got an unexpected keyword argument {m.group(1)!r}") from e


def _no_projection(name: str, extras: dict) -> None:
    """torch.nn.RNN and GRU refuse ``proj_size`` with this ValueError; so do these."""
    if "proj_size" in extras:
        raise ArgumentError(f"{name}: proj_size argument is only supported for LSTM, not RNN or GRU")
