"""The API page: Swagger UI over ``/openapi.json`` at ``/docs``, served from the assets flask-swagger-ui ships
(no CDN: a browser on a machine without internet shows it)."""

from __future__ import annotations

from flask_swagger_ui import get_swaggerui_blueprint

DOCS_URL = "/docs"

blp = get_swaggerui_blueprint(
    DOCS_URL,
    "/openapi.json",
    config={"app_name": "mlx-fusion API", "docExpansion": "list", "tryItOutEnabled": False},
)
