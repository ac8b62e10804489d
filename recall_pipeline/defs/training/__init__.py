"""Training: the two-tower recall model."""
