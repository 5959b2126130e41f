"""Marshmallow schemas: the single statement of each request and response body."""
