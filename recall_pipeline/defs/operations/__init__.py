"""Assets of the pipeline's own operation: the table of failed runs (``core.operations``)."""
