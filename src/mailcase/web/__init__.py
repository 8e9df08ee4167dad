"""HTTP: the REST API (FastAPI, OpenAPI at /docs), health and metrics."""
