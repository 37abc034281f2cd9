"""Two-stage training (full depth, then STAR + CogKD) and offline evaluation."""
