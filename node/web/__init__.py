"""The operator's console on the web: pages, the REST API, DICOMweb STOW-RS, health and
metrics (FastAPI on Uvicorn, Jinja2 pages rendered on the server; issue 13)."""
