"""``/capabilities`` (Table 6): the sensor definition and the actions the user may
schedule (admin-only actions are listed for admins alone)."""

from flask import g
from flask_restx import Namespace, fields

from .auth import AuthenticatedResource
from .common import error_model, sensor_app

ns = Namespace("capabilities", description="Sensor capabilities (Table 6)", path="/capabilities")
error = error_model(ns)

action_model = ns.model(
    "Action",
    {
        "name": fields.String(required=True, description="what a schedule entry names"),
        "summary": fields.String(required=True),
        "description": fields.String(),
        "admin_only": fields.Boolean(required=True, description="schedulable by admins only"),
        "max_run_time": fields.Float(required=True, description="seconds before it is stopped"),
        "parameters": fields.Raw(
            required=True, description="the flowgraph parameters the action runs with"
        ),
    },
)
capabilities_model = ns.model(
    "Capabilities",
    {
        "sensor": fields.Raw(required=True, description="the Sensor object (Table 37)"),
        "actions": fields.List(fields.Nested(action_model, skip_none=True), required=True),
    },
)


@ns.route("", endpoint="capabilities")
@ns.response(401, "No or bad credentials", error)
class Capabilities(AuthenticatedResource):
    @ns.doc("get_capabilities")
    @ns.marshal_with(capabilities_model, description="Table 6")
    def get(self):
        """The sensor (Table 37) and the actions the user may schedule (Table 22)."""
        sensor = sensor_app()
        actions = [
            action
            for action in sensor.action_descriptions
            if sensor.may_see_action(g.user, action["name"])
        ]
        return {"sensor": sensor.config.sensor, "actions": actions}
