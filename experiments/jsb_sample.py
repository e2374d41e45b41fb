"""Sample a chorale from the trained JSB model and write it as MIDI.

    RNNKIT_DATA=/work/shared/data python experiments/jsb_sample.py

Loads ``runs/jsb-chorales/best.safetensors`` (``rnnkit train --task music ...
--out runs/jsb-chorales``), reads a primer (the first ``--primer-steps`` frames of a
test chorale), samples ``--steps`` frames after it, each fed back as the next
input, and writes primer + continuation to ``docs/samples/jsb_sample.mid`` (one
step per beat, 120 bpm), then checks that the file reads back as the same roll.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from rnnkit.data.music import load_chorales, midi_to_piano_roll, piano_roll_to_midi  # noqa: E402
from rnnkit.train.saved import load_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "runs/jsb-chorales/best.safetensors"))
    ap.add_argument("--out", default=str(REPO / "docs/samples/jsb_sample.mid"))
    ap.add_argument("--data-dir", default=None, help="folder holding jsb_chorales/ (default $RNNKIT_DATA)")
    ap.add_argument("--piece", type=int, default=0, help="test chorale whose opening is the primer")
    ap.add_argument("--primer-steps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    loaded = load_model(args.model)
    model = loaded.model.eval()
    primer = load_chorales(args.data_dir)["test"][args.piece][:args.primer_steps].float()
    sampled = model.sample(args.steps, primer=primer.unsqueeze(0),
                           generator=torch.Generator().manual_seed(args.seed), temperature=args.temperature)[0]
    roll = torch.cat([primer, sampled]).bool()
    piano_roll_to_midi(roll, args.out)
    back = midi_to_piano_roll(args.out)
    if not torch.equal(back, roll):
        print(f"{args.out} does not read back as the sampled roll", file=sys.stderr)
        return 1
    notes = roll[args.primer_steps:].sum(1).float()
    print(f"wrote {args.out}: {args.primer_steps} primer + {args.steps} sampled steps, "
          f"{notes.mean():.2f} keys per sampled step (min {notes.min():.0f}, max {notes.max():.0f}); read back exactly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
