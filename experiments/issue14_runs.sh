#!/usr/bin/env bash
# The classification and tagging results (results/*.json), one `rnnkit train --experiment`
# each, run one after another on one CPU thread (about 2 hours on this machine):
#     RNNKIT_DATA=../shared/data bash experiments/issue14_runs.sh
# Each file records its own exact command, commit, machine, seed and wall time. (The CoNLL
# run of results/ was trained 30 minutes, then resumed to 56 and to 70: resuming is bit-exact.)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
train() { .venv/bin/python -m rnnkit train --no-progress --overwrite "$@"; }

train --task tag --dataset ud-ewt --batch-size 20 --lr 2e-3 --epochs 30 --max-minutes 14 \
      --out runs/ud-ewt-upos --experiment ud-ewt-upos
train --task classify --input onehot --hidden-size 32 --pooling max --lr 3e-3 --epochs 4 \
      --out runs/dna-motif --experiment dna-motif
train --task tag --dataset conll2003 --constraints IOBES --batch-size 10 --lr 1e-3 --epochs 50 --max-minutes 70 \
      --out runs/conll2003-bilstm-crf --experiment conll2003-bilstm-crf
train --task sentiment_tree --batch-size 25 --lr 2e-3 --epochs 30 --max-minutes 15 \
      --out runs/sst-tree-lstm --experiment sst-tree-lstm
train --task classify --dataset sst --granularity sst2 --embedding-dim 100 --hidden-size 150 --dropout 0.5 \
      --lr 1e-3 --batch-size 25 --epochs 20 --max-minutes 8 --out runs/sst-bilstm --experiment sst-bilstm
train --task tag --dataset conll2003 --no-crf --batch-size 10 --lr 1e-3 --epochs 50 --max-minutes 8 \
      --out runs/conll2003-bilstm --experiment conll2003-bilstm
train --task tag --dataset conll2003 --no-char-features --constraints IOBES --batch-size 10 --lr 1e-3 --epochs 50 \
      --max-minutes 8 --out runs/conll2003-bilstm-crf-nochar --experiment conll2003-bilstm-crf-nochar
