"""Training inside the package: MAE pretraining, the MOMO pipeline, fine-tuning, probes.

Like TorchGeo's ``trainers``, the Lightning modules are importable classes
(:class:`momo_geo.training.pretrain.MAEPretrainModule`,
:class:`momo_geo.training.finetune.FineTuneModule`), so an installed wheel can train and the
``momo-geo pretrain | finetune`` commands need no source checkout. Lightning is the optional
``[train]`` extra: every module here imports without it, and the Lightning classes are built on
first use, failing with one line (``pip install 'momo-geo[train]'``) where it is missing.

Modules: :mod:`~.schedule` (warm-up + cosine), :mod:`~.chips` (unlabelled chips of the train
splits), :mod:`~.pretrain_data` (chip pool, sampler, seeded masks), :mod:`~.runs` (the run-folder
contract: checkpoints, val log, bundle), :mod:`~.pretrain` (config, MAE module,
``run_pretrain``), :mod:`~.pipeline` (``run_momo``: base → sensor runs → EVL → merge),
:mod:`~.task_data` (labelled chips for fine-tuning), :mod:`~.finetune` (``Recipe``,
``finetune``), :mod:`~.probes` (frozen-encoder probes on cached features), :mod:`~.recipes`
(a recipe file → ``run_momo`` → ``finetune`` → bundle: how the bundled models are built).
"""
