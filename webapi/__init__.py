"""The Flask-RESTX application serving the SCOS HTTP API (IEEE 802.15.22.3, 8.2.1)."""
