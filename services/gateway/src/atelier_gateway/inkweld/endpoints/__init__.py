"""The facade's routes, one module-level router a concern; api.py includes them under `/api/v1`."""
