"""Classic state-space models with exact answers (Kalman filter, forward algorithm)."""
