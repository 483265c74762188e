"""nextword's HTTP service (FastAPI). It builds on ``model`` and is added by issue 4."""
