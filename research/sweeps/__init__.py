"""Sweeps: a grid of training runs from an experiment file, run, resumed and reported.

- hyper.py: LRA's sweep grammar, which an experiment file's `get_hyper(h)` builds its grid with;
- grid.py: the experiment file's grid as named cells, `--only` / `--shard` selection;
- axes.py: which keys a set of cells varies over, and their short names;
- cells.py: the one cell record, its folder's files and the one status rule;
- executors.py: where cells run (local processes, a submitit job array);
- runner.py: `python -m research.sweeps.runner` (`./launch.sh sweep`), the command line;
- report/: the report of a sweep folder (tables, CSV, plots);
- attention_maps.py: a trained run's attention weights as a PNG grid.
"""
