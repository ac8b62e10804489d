"""Training: the two-tower recall model, its LM fine-tuning, the MLflow registry and champion rule."""
