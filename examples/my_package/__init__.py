"""An example FastAPI application for appbin."""
