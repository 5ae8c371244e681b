"""What builds the shipped models and runs the experiments: recipe files and thin scripts.

The machinery lives in the package (:mod:`momo_geo.training`); nothing in ``momo_geo`` imports
from here. Run the scripts as ``python training/NAME.py`` or ``python -m training.NAME`` with
momo-geo installed.
"""
