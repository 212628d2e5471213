"""Training-set selection: the paper's flattening loop and the peer baselines."""
