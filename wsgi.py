"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from flask_app import create_app

app = create_app()
