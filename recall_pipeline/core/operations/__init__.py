"""The pipeline's own operation: the record of failed runs."""
