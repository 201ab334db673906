"""The scheduler, the ZeroMQ-controlled runner process that executes one task each, and callbacks."""
