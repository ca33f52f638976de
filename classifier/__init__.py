"""Classifier: timm training on real/synthetic/mixed CXRs, evaluation, reports.

Stable API (others build on it; import from the submodules, this package imports nothing
heavy):

Training (`classifier.train`)
    TrainConfig(real, out, synthetic=None, mix=0.0, train_size=None, backbone="densenet121",
        labels=None, pretrained=None, init_from=None, uncertain="ignore", image_size=224,
        epochs=10, batch_size=32, lr=3e-4, ..., seed=0, on_bad_image="error", arm=None,
        resume=False, overwrite=False)
    train_classifier(cfg, log=None) -> Path            # the run directory
    start_training(cfg, log=None) -> TrainingSession | None   # step-by-step (benchmarks)
    load_run(run_dir, device="cpu") -> (timm model in eval mode, config dict)
    default_arm(mix, init_from) -> "real" | "synthetic" | "mix0.5" | "pretrain-finetune"

Evaluation (`classifier.evaluate`)
    evaluate_run(run_dir, manifest=None, split="test", out_dir=None, n_boot=1000, seed=0)
        -> metrics dict (also writes predictions.parquet and metrics.json)
    bootstrap_auroc(y_true, y_prob, groups, n_boot=1000, seed=0) -> (auroc, lo, hi)
    paired_bootstrap_delta(y_true, prob_a, prob_b, groups, n_boot=1000, seed=0)
        -> (auroc_b - auroc_a, lo, hi)            # same resampled patients for both arms
    patient_resample_weights(groups, n_boot, seed) -> (weights (B, P), codes (n,))
    weighted_auroc(y_true, y_score, weights (B, n)) -> (B,) AUROC
    compute_metrics(y_true, y_prob, labels, groups, n_boot, seed) -> metrics dict
    read_predictions(run_dir) -> (frame, labels)

A run directory: `config.json`, `model.safetensors` (best val epoch), `metrics.json` (written
last: present means finished), `predictions.parquet` (`image_path`, `patient_id`,
`study_id`, `true.<label>` raw 1/0/-1/NaN, `prob.<label>`), `checkpoints/` (resume state).
"""
