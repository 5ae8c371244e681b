"""Training entry points: MAE pretraining, the MOMO pipeline (pretrain → EVL → merge), fine-tuning.

Kept outside the installed ``momo_geo`` package because training needs Lightning and data that a
user who only maps scenes does not; the ``momo-geo pretrain`` command imports from here.
"""
