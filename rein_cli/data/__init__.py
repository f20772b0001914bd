"""Data: label space, the dataset registry and manifests, loading and transforms, the synthetic benchmark."""
