"""Engine: training, evaluation, prediction, inference, metrics, checkpoints."""
