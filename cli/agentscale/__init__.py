"""agentscale: load and chaos testing for AI-agent services, measured per step."""

__version__ = "0.1.0"
