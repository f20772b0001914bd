"""Engine: runs, training, evaluation, prediction, inference, metrics, reports, checkpoints and their conversion."""
