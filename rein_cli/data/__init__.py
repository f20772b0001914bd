"""Data: the dataset registry and catalog, preparation, manifests, loading and transforms, the synthetic benchmark."""
