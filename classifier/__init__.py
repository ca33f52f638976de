"""Classifier: timm training on real/synthetic/mixed CXRs, evaluation, reports.

Stable API (import from the submodules; this package imports nothing heavy):

Configuration (`classifier.config`, torch-free)
    TrainConfig(real, out, synthetic=None, mix=0.0, train_size=None, backbone="densenet121",
        labels=None, ..., real_size=None, allow_foreign_synthetic=False, matched_to=None,
        arm=None, resume=False, overwrite=False)
    check_train_config(cfg); default_arm(mix, init_from)
    ReportConfig(runs, out, ...)   # `cxraug report`; N_BOOT, the bootstrap's resamples

Training (`classifier.train`)
    train_classifier(cfg, log=None) -> Path            # the run folder
    decide_folder_state(cfg) -> str    # every check, then fresh / resume / finished / overwrite
    start_training(cfg, accelerator, state_name, log=None) -> TrainingSession  # step by step
    prepare_data(cfg, log) -> RunData   # `classifier.run_data`: train/val/test, decoded once

The run folder (`classifier.run`, its only owner)
    read_config(run_dir), read_metrics(run_dir), read_predictions(run_dir) -> (frame, labels)
    load_model(run_dir, device="cpu") -> (timm model in eval mode, config dict)
    find_runs(paths) -> run folders; FORMAT (manifests.runfolder.FolderFormat)
    config.json, model.safetensors (best val epoch), predictions.parquet,
    training_patients.json (what its weights saw), metrics.json (written last: present means
    finished), checkpoints/checkpoint-N/ (classifier.training: safetensors + JSON, never
    pickles)
    read_seen_patients(run_dir) -> SeenPatients | None; `classifier.run_patients`:
    source_seen(run_dir, flag), check_source_run(real, name, run_dir, flag)  # --init-from

Evaluation (`classifier.evaluate`)
    evaluate_run(run_dir, manifest=None, split="test", out_dir=None, n_boot=N_BOOT, seed=0)
    compute_metrics(...) -> metrics dict (with ci_n_valid / macro_ci_n_valid)

Statistics (`classifier.stats`, torch-free)
    bootstrap_auroc(y_true, y_prob, groups, n_boot=N_BOOT, seed=0) -> (auroc, lo, hi)
    paired_bootstrap_delta(y_true, prob_a, prob_b, groups, n_boot=N_BOOT, seed=0)
    fixed_macro(per_label, keep)       # the macro over one fixed label set in every resample
    seed_interval(terms, level, delta, method) -> SeedInterval  # patient bootstrap + seeds, t
    seed_p_value(terms) -> p per column (the one seed_interval inverts); holm(p, alpha)

Arm names (`classifier.arms`, torch-free)
    Arm(mix, real_size, matched_to, ...).name; Arm.parse(name); Arm.from_config(config)

Reports (`classifier.report_render`; the statistics in `classifier.report`; `classifier.efficiency`,
`classifier.tables`)
    make_report(cfg: ReportConfig, sections=()) -> (report, written files)
    `classifier.endpoints`: the primary endpoint and the Holm-adjusted secondary comparisons
    `classifier.steps`: each run's realised optimizer steps and scored epoch
    efficiency_table(report), synthetic_worth(table)   # data-efficiency curves and worth

Also: `classifier.dataset.ManifestDataset` (a PyTorch Dataset over any manifest for your own
trainer) and the training toolkit both trainers share, `classifier.training`: `build_accelerator`,
`Checkpointer` (safetensors + JSON, never pickles), `jsonable`, tracking (--report-to
tensorboard|wandb).
"""
