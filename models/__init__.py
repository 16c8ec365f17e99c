"""Model architectures, training, evaluation and shipped packages (torch only where noted)."""
