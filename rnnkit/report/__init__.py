"""See a run: curves (:mod:`.plots`, ``rnnkit plot``) and one self-contained HTML report
(:mod:`.html`, ``rnnkit report``) of one or several run folders, read leniently by
:mod:`.rundata` (older folders and killed runs included). The run-folder layout is in
:mod:`rnnkit.train.rundir`."""
