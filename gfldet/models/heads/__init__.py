"""Dense detection heads: the shared DenseHead base, the GFL head and post-processing."""
