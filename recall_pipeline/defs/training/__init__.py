"""Training: the two-tower recall model and the TextCF cold-item model."""
