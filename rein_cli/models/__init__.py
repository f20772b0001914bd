"""Models: Rein, the frozen backbone wrapper, heads, and the segmentor builder."""
