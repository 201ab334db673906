"""The SCOS HTTP API (Flask-RESTX): one namespace per resource, token or JWT auth."""

from .app import create_app

__all__ = ["create_app"]
