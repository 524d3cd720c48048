"""Training: the fit loop, the training steps, optimizers and schedules, logging, torchrun."""
