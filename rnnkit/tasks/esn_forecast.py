"""Forecasting with an echo state network (Jaeger 2001): the forecast task's series,
splits and scoring, with a reservoir whose ridge readout the loop fits in closed form
(one pass over the training windows, one solve; no gradient steps).

Validation and test are scored after the washout of each evaluation stream, as the fit
leaves it out: a reservoir started from zero echoes that start for ~washout steps.

    rnnkit train --task esn_forecast --reservoir-size 300 --leak-rate 0.3 --ridge 1e-8
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..train.tbptt import Window
from ..train.task import Panel, StepOutput
from .forecast import ForecastOptions, ForecastTask


class EchoStateForecastTask(ForecastTask):
    name = "esn_forecast"
    Options = ForecastOptions
    model = "echo_state_forecaster"
    # One stream each: a reservoir restarted from zero echoes its start for ~washout steps,
    # so fewer restarts mean more usable rows and less transient in the scores.
    eval_streams = 1
    train_defaults = {"out": "runs/esn_forecast", "bptt": 500, "batch_size": 1, "epochs": 1}

    def __init__(self, options: ForecastOptions, model_options: dict[str, Any]) -> None:
        if options.regime != "teacher":
            raise ConfigError(f"config: [train] regime {options.regime!r}: the echo state network's readout is "
                              "fitted in closed form under teacher forcing; use regime 'teacher' (or the forecast "
                              "task for a trained forecaster)")
        super().__init__(options, model_options)

    def closed_form_step(self, model: nn.Module, batch: tuple[Window, Tensor, Tensor], state: Any = None) -> Any:
        w, x, y = batch
        if w.carry_at < x.shape[1] or w.score_from != w.start:
            raise ConfigError("the esn_forecast task needs bptt_k1 = bptt (consecutive windows)")
        return model.accumulate(x, y, state)

    def step(self, model: nn.Module, batch: tuple[Window, Tensor, Tensor], state: Any = None) -> StepOutput:
        w, x, y = batch
        w = dataclasses.replace(w, score_from=max(w.score_from, w.start + model.washout_left(state, x.shape[1])))
        return super().step(model, (w, x, y), state)

    def panels(self, model: nn.Module, steps: int = 300) -> list[Panel]:
        """The start of the validation series: the truth and the reservoir's one-step
        forecast (after its washout, as scored)."""
        z = self.splits["valid"][:steps + 1]
        x = z[:-1].view(1, -1, 1).to(next(iter(model.buffers()), torch.empty(0)).device)
        pred, _ = model(x, None)
        pred = pred[0, :, 0].float().cpu().tolist()
        washout = min(model.washout_left(None, len(pred)), len(pred))
        return [Panel.lines("validation series: one-step forecast", range(1, len(pred) + 1),
                            {"truth": z[1:].tolist(), "forecast": [None] * washout + pred[washout:]},
                            xlabel="step", ylabel="value (standardised)")]
