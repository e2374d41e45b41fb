r"""Encoder–decoder with attention (Sutskever et al. 2014; Bahdanau et al. 2015; Luong et al. 2015).

The encoder (any cell, bidirectional, deep) reads the source ``(B, S)``; the decoder's
initial state is a learned map of the encoder's last states (the upper state initialised
from the last state); at each target step the decoder state :math:`s_t` attends over the
encoder outputs :math:`h_j`:

* additive (Bahdanau): :math:`e_{tj} = v^\top \tanh(W_s s_t + W_h h_j)`
* multiplicative (Luong "general"): :math:`e_{tj} = s_t^\top W h_j`

:math:`a_t = \mathrm{softmax}_j(e_{tj})` over the real source positions only (padding gets
weight exactly 0), context :math:`c_t = \sum_j a_{tj} h_j`, attentional vector
:math:`\tilde s_t = \tanh(W_c [s_t; c_t])` and :math:`p(y_t) = \mathrm{softmax}(W_o \tilde s_t)`.
With input feeding (Luong) :math:`\tilde s_{t-1}` is concatenated to the next input.

The decoder follows the step contract of :mod:`rnnkit.models.feedback`:
``step(y_prev (B,), state) -> (logits (B, V), state)``; teacher forcing, greedy decoding
and beam search (:mod:`rnnkit.models.beam`) all use it. ``<eos>`` also starts a target
(as fairseq does): the vocabularies have no separate begin symbol.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ShapeError
from ..options import option, require
from .cells import CELLS, RegularizationOptions, layer_regularization, recurrent_layer, regularization_checks

ATTENTIONS = ("bahdanau", "luong", "none")


@dataclass(frozen=True)
class Seq2SeqConfig(RegularizationOptions):
    """Architecture of a :class:`Seq2Seq`; vocabulary sizes come from the data.

    The regularisation of :class:`RegularizationOptions` applies to the encoder and the
    decoder alike (``hidden_dropout`` between the layers of each, where it has more than
    one). The decoder runs one step per forward call (teacher forcing too), so in training
    its masks (recurrent dropout, weight drop, zoneout) are drawn per step, not per sequence.
    """

    src_vocab_size: int                # from the data
    tgt_vocab_size: int                # from the data
    pad_id: int = 0
    eos_id: int = 2
    cell: str = option("gru", "recurrent cell of encoder and decoder: " + ", ".join(CELLS))
    embedding_dim: int = option(256, "source and target embedding size")
    hidden_size: int = option(256, "decoder state size (the encoder's per direction is half when bidirectional)")
    encoder_layers: int = option(1, "stacked encoder layers")
    decoder_layers: int = option(1, "stacked decoder layers")
    bidirectional: bool = option(True, "bidirectional encoder")
    attention: str = option("bahdanau", "attention: bahdanau (additive), luong (multiplicative) or none")
    input_feeding: bool = option(True, "feed the previous attentional vector to the decoder (Luong et al.)")
    dropout: float = option(0.2, "dropout on embeddings and outputs")
    max_source_len: int = option(200, "longest source accepted (tokens, <eos> included)")

    def __post_init__(self) -> None:
        require([(min(self.src_vocab_size, self.tgt_vocab_size) > 3, "vocabularies need more than the specials"),
                 (self.cell in CELLS, f"cell must be one of {sorted(CELLS)}, got {self.cell!r}"),
                 (self.attention in ATTENTIONS, f"attention must be one of {ATTENTIONS}, got {self.attention!r}"),
                 (min(self.embedding_dim, self.hidden_size, self.encoder_layers, self.decoder_layers) > 0,
                  "sizes and layer counts must be > 0"),
                 (not self.bidirectional or self.hidden_size % 2 == 0,
                  f"a bidirectional encoder needs an even hidden_size, got {self.hidden_size}"),
                 (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
                 (self.max_source_len > 0, f"max_source_len must be > 0, got {self.max_source_len}")]
                + regularization_checks(self), "model config:")

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    """``(query (B, H), memory (B, S, H), mask (B, S)) -> (context (B, H), weights (B, S))``."""

    def __init__(self, kind: str, size: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            self.query = nn.Linear(size, size, bias=False)
            self.key = nn.Linear(size, size)
            self.v = nn.Linear(size, 1, bias=False)
        else:
            self.key = nn.Linear(size, size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """The memory's projection, computed once per source (not per step)."""
        return self.key(memory)

    def forward(self, query: Tensor, memory: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "bahdanau":
            scores = self.v(torch.tanh(self.query(query).unsqueeze(1) + keys)).squeeze(-1)   # (B, S)
        else:
            scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)                         # (B, S)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights


class Seq2Seq(nn.Module):
    """``forward(src (B, S), src_lengths (B,), tgt_in (B, T)) -> logits (B, T, V)`` (teacher
    forcing); :meth:`encode` + :meth:`step` for decoding one token at a time."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        enc_size = c.hidden_size // 2 if c.bidirectional else c.hidden_size
        self.src_embedding = nn.Embedding(c.src_vocab_size, c.embedding_dim, padding_idx=c.pad_id)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab_size, c.embedding_dim, padding_idx=c.pad_id)
        self.encoder = recurrent_layer(c.cell, c.embedding_dim, enc_size, c.encoder_layers, dropout=c.dropout,
                                       bidirectional=c.bidirectional,
                                       **layer_regularization(c, num_layers=c.encoder_layers))
        feed = c.hidden_size if c.input_feeding and c.attention != "none" else 0
        self.decoder = recurrent_layer(c.cell, c.embedding_dim + feed, c.hidden_size, c.decoder_layers,
                                       dropout=c.dropout, **layer_regularization(c, num_layers=c.decoder_layers))
        self.bridge = nn.Linear(c.hidden_size, c.hidden_size * c.decoder_layers)
        self.attention = Attention(c.attention, c.hidden_size) if c.attention != "none" else None
        self.combine = nn.Linear(2 * c.hidden_size, c.hidden_size) if self.attention is not None else None
        self.out = nn.Linear(c.hidden_size, c.tgt_vocab_size)
        self.drop = nn.Dropout(c.dropout)
        self.lstm = c.cell.startswith("lstm")

    # --- encoder ----------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        """The decoder's starting state: memory ``(B, S, H)``, its keys, the source mask
        ``(B, S)``, the initial decoder state and a zero attentional vector."""
        c = self.config
        if src.dim() != 2 or src.dtype != torch.long:
            raise ShapeError(f"Seq2Seq: src must be token ids (batch, seq), got {src.dtype} {tuple(src.shape)}")
        if src.shape[1] > c.max_source_len:
            raise ShapeError(f"Seq2Seq: a source of {src.shape[1]} tokens is longer than the model's limit "
                             f"max_source_len={c.max_source_len}")
        lengths = src_lengths.to("cpu", torch.long)
        memory, state = self.encoder(self.drop(self.src_embedding(src)), lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state                  # (L * dirs, B, H_enc)
        last = torch.cat([h[-2], h[-1]], -1) if c.bidirectional else h[-1]    # (B, H): both directions' ends
        init = torch.tanh(self.bridge(last)).view(-1, c.decoder_layers, c.hidden_size).transpose(0, 1).contiguous()
        mask = torch.arange(src.shape[1], device=src.device).unsqueeze(0) < lengths.to(src.device).unsqueeze(1)
        dec_state = (init, torch.zeros_like(init)) if self.lstm else init
        return {"memory": memory, "keys": self.attention.keys(memory) if self.attention is not None else memory,
                "mask": mask, "state": dec_state, "feed": memory.new_zeros(src.shape[0], c.hidden_size)}

    # --- decoder: the step contract ---------------------------------------------------
    def step(self, y_prev: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """``y_prev (B,)`` ids -> ``(logits (B, V), state)``; ``state["weights"]`` holds this
        step's attention ``(B, S)``."""
        x = self.drop(self.tgt_embedding(y_prev))
        if self.attention is not None and self.config.input_feeding:
            x = torch.cat([x, state["feed"]], -1)
        out, dec_state = self.decoder(x.unsqueeze(1), state["state"])
        s = out[:, 0]
        new = dict(state, state=dec_state)
        if self.attention is not None:
            context, weights = self.attention(s, state["memory"], state["keys"], state["mask"])
            s = torch.tanh(self.combine(torch.cat([s, context], -1)))
            new.update(feed=s, weights=weights)
        return self.out(self.drop(s)), new

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: ``tgt_in (B, T)`` is ``<eos>`` followed by the target but its last
        token; returns logits ``(B, T, V)`` for the target."""
        state = self.encode(src, src_lengths)
        logits = []
        for t in range(tgt_in.shape[1]):
            step_logits, state = self.step(tgt_in[:, t], state)
            logits.append(step_logits)
        return torch.stack(logits, 1)

    def reorder(self, state: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        """The state of the hypotheses ``index`` (beam search keeps and copies rows)."""
        out = {}
        for k, v in state.items():
            if k == "state":
                out[k] = tuple(s.index_select(1, index) for s in v) if isinstance(v, tuple) else v.index_select(1, index)
            else:
                out[k] = v.index_select(0, index)
        return out

    @torch.no_grad()
    def attention_map(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Attention weights ``(B, T, S)`` while reading ``tgt_in`` (for heat maps)."""
        state = self.encode(src, src_lengths)
        maps = []
        for t in range(tgt_in.shape[1]):
            _, state = self.step(tgt_in[:, t], state)
            maps.append(state.get("weights", torch.zeros_like(state["mask"], dtype=torch.float)))
        return torch.stack(maps, 1)


def shift_right(tgt: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """Decoder inputs for teacher forcing: ``<eos>`` then the target without its last token
    (padding stays padding)."""
    start = torch.full_like(tgt[:, :1], eos_id)
    shifted = torch.cat([start, tgt[:, :-1]], 1)
    return shifted.masked_fill(tgt.eq(pad_id), pad_id)


def sequence_nll(logits: Tensor, tgt: Tensor, pad_id: int) -> Tensor:
    """Summed cross-entropy over the real target tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1), ignore_index=pad_id,
                           reduction="sum")
