"""The training toolkit both trainers share (`augmentor.finetune`, `classifier.train`).

In the spirit of diffusers' `training_utils` and timm's `utils/`: one module per concern,
imported from the submodules (this package imports nothing heavy).

* `classifier.training.accelerator`: the one rule for device, mixed precision and seeds
  (`build_accelerator`, `cpu_only`).
* `classifier.training.checkpointer`: `Checkpointer`, which owns a run's checkpoints (save
  under a scratch name and rename, resume, rotation, the best model).
* `classifier.training.state`: the training state as safetensors + JSON, never pickles.
* `classifier.training.tracking`: `--report-to tensorboard|wandb` (`start_tracking`).
* `classifier.training.records`: `jsonable`, configs and records as JSON values.
"""
