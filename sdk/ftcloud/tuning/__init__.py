"""Hyperparameter tuning: one search-space schema, SageMaker Automatic Model Tuning and local Optuna."""
