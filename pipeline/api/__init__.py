"""The HTTP API (FastAPI): upload, batch and job views, costs, health, metrics, the dashboard.

`create_app()` in app.py builds the application; `pipeline serve` runs it under uvicorn.
"""
