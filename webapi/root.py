"""``/api/v1/``: a link to every resource."""

from flask_restx import Namespace, fields

from .auth import AuthenticatedResource
from .common import error_model, link

ns = Namespace("root", description="Links to every resource", path="/")
error = error_model(ns)

LINKS = {
    "status": "status",
    "capabilities": "capabilities",
    "schedule": "schedule",
    "upcoming_tasks": "upcoming_tasks",
    "completed_tasks": "completed_tasks",
    "users": "users",
    "me": "me",
    "metrics": "metrics",
    "docs": "doc",
    "swagger": "specs",
}
root_model = ns.model("Root", {name: fields.String(required=True) for name in LINKS})


@ns.route("/", endpoint="root")
@ns.response(401, "No or bad credentials", error)
class Root(AuthenticatedResource):
    @ns.doc("get_root")
    @ns.marshal_with(root_model)
    def get(self):
        """The URL of every resource of the API."""
        return {name: link(endpoint) for name, endpoint in LINKS.items()}
