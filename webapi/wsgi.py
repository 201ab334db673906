"""The WSGI application for gunicorn: ``gunicorn grscos.webapi.wsgi:app``, configured
by the environment and the settings file (``grscos.settings``)."""

from .app import create_app

app = create_app()
