"""Adversarial scenarios: real gunicorn servers, real databases, clients that misbehave."""
